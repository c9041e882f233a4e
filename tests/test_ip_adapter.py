"""IP-Adapter through diffusers' loading path (harness/diffusion/ip_adapter.py) and RegionDrag's default
IP-Adapter Plus: random checkpoints in the file layout, attach/restore of the shared UNet, `off` unchanged."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.diffusion.ip_adapter import IP_ARCHS, convert, random_state_dict
from harness.models.components import load_component
from methods.regiondrag import RegionDrag
from tests.test_regiondrag import make_sample

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _unet_out(models, **extra):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return models.unet(x, 10, encoder_hidden_states=torch.ones(1, 77, 32), **extra).sample


def test_full_size_checkpoint_layout_loads_through_diffusers():
    """The random Plus checkpoint for SD 1.5 has the released file's keys (Resampler: 7 + 4 × 11; 16
    cross-attention layers at odd processor indices) and diffusers converts it strictly."""
    from diffusers import UNet2DConditionModel

    from harness.models.architectures import ARCHITECTURES

    with torch.device("meta"):
        unet = UNet2DConditionModel(**ARCHITECTURES["sd15"]["unet"])
    sd = random_state_dict("ip_adapter_plus", unet, 0)
    assert len(sd["image_proj"]) == 51 and sd["image_proj"]["latents"].shape == (1, 16, 768)
    assert sd["image_proj"]["proj_in.weight"].shape == (768, 1280)
    assert set(sd["ip_adapter"]) == {f"{i}.to_{kv}_ip.weight" for i in range(1, 32, 2) for kv in "kv"}
    # attn_processors order: down, up, then mid (module registration order), as the released file indexes them
    assert sd["ip_adapter"]["29.to_k_ip.weight"].shape == (320, 768) and sd["ip_adapter"]["31.to_k_ip.weight"].shape == (1280, 768)
    projection = unet._convert_ip_adapter_image_proj_to_diffusers(sd["image_proj"], low_cpu_mem_usage=False)
    assert type(projection).__name__ == "IPAdapterPlusImageProjection"
    plain = random_state_dict("ip_adapter", unet, 0)
    assert plain["image_proj"]["proj.weight"].shape == (4 * 768, 1024)


@pytest.mark.parametrize("name,tokens", [("ip_adapter_plus_sd15", 16), ("ip_adapter_sd15", 4)])
def test_attached_adds_image_tokens_and_restores_the_unet(tiny_models, name, tokens):
    ip = load_component(name, tiny_models)
    assert load_component(name, tiny_models) is ip
    before = _unet_out(tiny_models)
    processors = dict(tiny_models.unet.attn_processors)
    embeds = ip.image_embeds(make_sample().image)
    assert embeds.shape[:2] == (2, 1)
    projected = ip.projection([embeds])[0]
    assert projected.shape[-2:] == (tokens, 32)
    with ip.attached(tiny_models.unet, 0.5):
        on = _unet_out(tiny_models, added_cond_kwargs={"image_embeds": [embeds]})
    assert not torch.equal(on, before)
    assert torch.equal(_unet_out(tiny_models), before)
    assert tiny_models.unet.encoder_hid_proj is None and dict(tiny_models.unet.attn_processors) == processors


def test_random_weights_are_seeded(tiny_models):
    a = random_state_dict("ip_adapter_plus_tiny", tiny_models.unet, 0)
    b = random_state_dict("ip_adapter_plus_tiny", tiny_models.unet, 0)
    c = random_state_dict("ip_adapter_plus_tiny", tiny_models.unet, 1)
    assert all(torch.equal(a["image_proj"][k], b["image_proj"][k]) for k in a["image_proj"])
    assert not torch.equal(a["image_proj"]["latents"], c["image_proj"]["latents"])
    procs, proj = convert(tiny_models.unet, a)
    assert tiny_models.unet.encoder_hid_proj is None and set(IP_ARCHS) >= {"ip_adapter_plus_tiny"}


def test_regiondrag_ip_adapter_default_and_off_unchanged(tiny_models):
    """`off` gives the same output before and after IP-Adapter Plus ran on the shared UNet; the default
    (plus, as released) and the source-tokens-only switch each change the output."""
    sample = make_sample()
    off = RegionDrag.build({"ip_adapter": "off", "steps": 4})
    off.setup(tiny_models)
    first = off.edit(sample, 42).image
    plus = RegionDrag.build({"steps": 4})
    assert plus.config.ip_adapter == "plus" and plus.components() == ("ip_adapter_plus_sd15",)
    plus.setup(tiny_models)
    with_ip = plus.edit(sample, 42).image
    source_only = RegionDrag.build({"steps": 4, "ip_adapter_tokens": "source"})
    source_only.setup(tiny_models)
    assert not np.array_equal(with_ip, first)
    assert not np.array_equal(source_only.edit(sample, 42).image, with_ip)
    assert np.array_equal(off.edit(sample, 42).image, first)
    assert off.describe()["config"]["ip_adapter"] == "off" and "ip_adapter_scale" not in off.describe()["config"]
    with pytest.raises(ValueError, match="ip_adapter must be one of"):
        RegionDrag.build({"ip_adapter": "pluss"})


def test_regiondrag_batch_with_ip_adapter_matches_one_at_a_time(tiny_models):
    """Per-sample [zero image, source] pairs stay with their own sample in a batched UNet call."""
    a, b = make_sample(), make_sample(shift=(8, 8))
    b = b.replace(image=np.ascontiguousarray(b.image[::-1]))
    single = RegionDrag.build({"steps": 4})
    single.setup(tiny_models)
    batched = RegionDrag.build({"steps": 4, "batch_size": 2})
    batched.setup(tiny_models)
    together = batched.edit_batch([a, b], 42)
    for result, sample in zip(together, (a, b)):
        assert np.abs(result.image.astype(int) - single.edit(sample, 42).image.astype(int)).max() <= 1


def test_planning_keys_include_the_component_identity(tiny_models):
    from harness.data.demo import DemoDataset
    from harness.planning import plan_methods

    model = {"name": "tiny", "source": "random", "arch": "tiny", "device": "cpu"}
    plans = plan_methods({"regiondrag": {}, "identity": {}}, model, DemoDataset())
    regiondrag = next(p for p in plans if p.name == "regiondrag")
    assert regiondrag.description["components"] == {"ip_adapter_plus_sd15": "random:ip_adapter_plus_tiny:seed0"}
    off = plan_methods({"regiondrag": {"ip_adapter": "off"}}, model, DemoDataset())[0]
    assert "components" not in off.description and off.key != regiondrag.key


REFERENCE = os.environ.get("EDITLAB_REGIONDRAG_REF")


@pytest.mark.skipif(not REFERENCE, reason="set EDITLAB_REGIONDRAG_REF to a Visual-AI/RegionDrag checkout (@5cf4922)")
def test_parity_with_the_release_with_ip_adapter(tiny_models):
    """The released drag() on the same tiny weights with IP-Adapter Plus on: bit-identical (measured:
    max |Δ| 0 for the final latent and the image, CPU, 64² synthetic sample)."""
    from benchmarks.bench_regiondrag import load_reference, run_reference, synthetic_sample

    sample = synthetic_sample(64)
    method = RegionDrag.build({})
    method.setup(tiny_models)
    ours = method.edit(sample, 42).image
    reference = load_reference(Path(REFERENCE).resolve(), tiny_models, method.ip)
    with method.ip.attached(tiny_models.unet, 0.5):
        theirs = run_reference(reference, sample, 42)
    assert np.array_equal(ours, theirs)


def test_real_weights_path_loads_the_released_layout(tmp_path, tiny_models):
    """A directory laid out like h94/IP-Adapter (models/<weight_name> as a pickled checkpoint, models/image_encoder
    as a transformers directory) loads through the real-weights path and gives the random build's outputs
    when it holds the same tensors: real and random weights share every line after the file read."""
    import dataclasses
    from types import SimpleNamespace

    from harness.models.components import ComponentSpec

    random_ip = load_component("ip_adapter_plus_sd15", tiny_models)
    (tmp_path / "models").mkdir()
    torch.save(random_state_dict("ip_adapter_plus_tiny", tiny_models.unet, 0), tmp_path / "models" / "ip-adapter-plus_sd15.bin")
    random_ip.image_encoder.save_pretrained(tmp_path / "models" / "image_encoder")
    spec = dataclasses.replace(ComponentSpec.read("ip_adapter_plus_sd15"), path=str(tmp_path))
    base = SimpleNamespace(spec=dataclasses.replace(tiny_models.spec, source="pretrained", path="local/sd"),
                           unet=tiny_models.unet, pipe=tiny_models.pipe, device=tiny_models.device, dtype=tiny_models.dtype)
    real_ip = load_component(spec, base)
    assert real_ip is not random_ip
    image = make_sample().image
    embeds = real_ip.image_embeds(image)
    assert torch.equal(embeds, random_ip.image_embeds(image))
    outs = []
    for ip in (real_ip, random_ip):
        with ip.attached(tiny_models.unet, 0.5):
            outs.append(_unet_out(tiny_models, added_cond_kwargs={"image_embeds": [embeds]}))
    assert torch.equal(*outs)


def test_lock_covers_the_components_a_run_loads():
    from harness.config import compose
    from harness.models.sources import run_sources

    names = lambda overrides: [s.setting for s in run_sources(compose(["model=sd15", "method=[regiondrag]", *overrides]))]
    assert names([]) == ["model", "component.ip_adapter_plus_sd15"]
    assert names(["method.regiondrag.ip_adapter=off"]) == ["model"]
    assert names(["model=tiny"]) == []  # random models load no real weights
