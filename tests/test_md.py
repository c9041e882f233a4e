"""Both mean-distance protocols on synthetic cases with known answers.

The DIFT featurizer is replaced by an exactly translation-equivariant extractor (a random convolution with
circular padding): for an edited image that is the source circularly shifted by k pixels, every handle's
best match is the handle moved by k, so the mean distance is known in closed form.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from harness.metrics.base import MetricContext
from harness.metrics.md_dift import MdDiftDragDiffusion, MdDiftRegionDrag, disc_union_mask
from harness.pipeline import leaderboard
from harness.types import DragSample


class ShiftEquivariant:
    """Stands in for `DiftFeaturizer`: 32 random channels from 5×5 patches, circular padding."""

    def __init__(self, models):
        self.models = models
        self.weight = torch.randn(32, 3, 5, 5, generator=torch.Generator().manual_seed(0))
        self.t, self.up_ft_index, self.ensemble, self.compiled = 261, 1, 8, False

    def __call__(self, image, prompt, latent, generator):
        x = F.pad(image.float(), (2, 2, 2, 2), mode="circular")
        return F.conv2d(x, self.weight)


class FakeModels:
    device, dtype = torch.device("cpu"), torch.float32

    def describe(self):
        return {"model": "test:shift-equivariant"}


def metric(cls):
    m = cls(MetricContext({"seed": 42}, device="cpu"))
    m.context._cache[("dift", cls.dift_dtype, False)] = ShiftEquivariant(FakeModels())
    return m


def shifted_pair(h=96, w=96, k=(5, 3)):
    rng = np.random.default_rng(1)
    source = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    edited = np.roll(source, shift=(k[1], k[0]), axis=(0, 1))  # moves content by +k (x, y)
    return source, edited


def drag_sample(source, handles, targets):
    return DragSample("t/c/s", source, "p", handles, targets, np.ones(source.shape[:2], bool))


def test_md_dragdiffusion_is_zero_when_targets_equal_the_true_motion():
    source, edited = shifted_pair(k=(5, 3))
    handles = np.array([[30, 40], [60, 20], [45, 70]], float)
    value = metric(MdDiftDragDiffusion).compute(drag_sample(source, handles, handles + [5, 3]), edited, {})
    assert value.value == pytest.approx(0.0) and value.weight == 3


def test_md_dragdiffusion_measures_pixels_to_the_target():
    source, edited = shifted_pair(k=(5, 3))
    handles = np.array([[30, 40], [60, 20]], float)
    targets = handles + [5 + 6, 3 + 8]  # the content arrived 10 px short of the target
    value = metric(MdDiftDragDiffusion).compute(drag_sample(source, handles, targets), edited, {})
    assert value.value == pytest.approx(10.0)


def test_md_regiondrag_normalises_per_axis():
    source, edited = shifted_pair(h=96, w=96, k=(4, 2))  # 96 → 768 is an exact ×8 nearest resize
    handles = np.array([[30, 40], [50, 60]], float)
    targets = handles + [4 + 3, 2]  # 3 px short in x only; discs of radius ≥ 5 contain the true match
    value = metric(MdDiftRegionDrag).compute(drag_sample(source, handles, targets), edited, {})
    assert value.value == pytest.approx(3 / 96)
    exact = metric(MdDiftRegionDrag).compute(drag_sample(source, handles, handles + [4, 2]), edited, {})
    assert exact.value == pytest.approx(0.0)


def test_md_regiondrag_search_is_restricted_to_the_discs():
    source, edited = shifted_pair(k=(20, 0))
    handles = np.array([[30.0, 40.0]])
    targets = np.array([[32.0, 40.0]])  # discs of radius 5 around (30,40) and (32,40): (50,40) is outside
    value = metric(MdDiftRegionDrag).compute(drag_sample(source, handles, targets), edited, {})
    assert value.value < 8 / 96  # the best match inside the discs, not the true one 18 px away
    mask = disc_union_mask(torch.tensor([[30, 40]]), torch.tensor([[32, 40]]), (96, 96))
    assert mask[0, 40, 30] and mask[0, 40, 36] and not mask[0, 40, 50]


def test_pooled_versus_per_image_averaging():
    """@dragdiffusion pools points over images (weights); @regiondrag averages images."""
    rows = pd.DataFrame([
        {"dataset": "d", "method": "m", "method_key": "k", "sample_id": "a", "metric": "md_dift@dragdiffusion", "value": 10.0, "weight": 4.0, "status": "ok"},
        {"dataset": "d", "method": "m", "method_key": "k", "sample_id": "b", "metric": "md_dift@dragdiffusion", "value": 40.0, "weight": 1.0, "status": "ok"},
        {"dataset": "d", "method": "m", "method_key": "k", "sample_id": "a", "metric": "md_dift@regiondrag", "value": 0.1, "weight": 1.0, "status": "ok"},
        {"dataset": "d", "method": "m", "method_key": "k", "sample_id": "b", "metric": "md_dift@regiondrag", "value": 0.4, "weight": 1.0, "status": "ok"},
    ])
    board = leaderboard(rows, ["md_dift@dragdiffusion", "md_dift@regiondrag"])
    assert board.loc[0, "md_dift@dragdiffusion"] == pytest.approx(16.0)
    assert board.loc[0, "md_dift@regiondrag"] == pytest.approx(0.25)


def test_real_dift_path_runs_and_is_seeded(smoke_features):
    """The DIFT path on tiny SD 2.1-shaped weights: deterministic per seed, both protocols."""
    source, edited = shifted_pair(h=64, w=80)
    sample = drag_sample(source, np.array([[20.0, 30.0]]), np.array([[28.0, 30.0]]))
    for cls in (MdDiftDragDiffusion, MdDiftRegionDrag):
        ctx = MetricContext(smoke_features, device="cpu")
        a = cls(ctx).compute(sample, edited, {})
        b = cls(MetricContext(smoke_features, device="cpu")).compute(sample, edited, {})
        assert a.value == b.value and np.isfinite(a.value)
        assert cls(ctx).settings()["model"] == "random:tiny_sd21:seed0"


def test_low_resolution_similarity_equals_the_upsampled_argmax():
    """The protocol upsamples both feature maps (nearest) before matching; gathering the low-resolution
    similarities through the index map must pick the same positions, ties included."""
    from harness.metrics.md_dift import nearest_upsampled_match_xy

    g = torch.Generator().manual_seed(3)
    for (lh, lw), (h, w) in [((6, 6), (40, 40)), ((7, 5), (43, 29)), ((8, 8), (64, 64))]:
        src, trg = torch.randn(1, 16, lh, lw, generator=g), torch.randn(1, 16, lh, lw, generator=g)
        query = torch.stack([torch.randint(0, w, (5,), generator=g), torch.randint(0, h, (5,), generator=g)], 1)
        target = torch.stack([torch.randint(0, w, (5,), generator=g), torch.randint(0, h, (5,), generator=g)], 1)
        mask = disc_union_mask(query, target, (h, w))
        # the protocol's full-size formulation (RegionDrag evaluator.nn_get_matches)
        up_src, up_trg = F.interpolate(src, size=(h, w)), F.interpolate(trg, size=(h, w))
        q = F.normalize(up_src[0, :, query[:, 1], query[:, 0]], p=2, dim=0)
        sim = q.t() @ F.normalize(up_trg, p=2, dim=1).reshape(16, -1)
        best = torch.where(mask.reshape(len(q.t()), -1), sim, torch.full_like(sim, -torch.inf)).argmax(-1)
        expected = torch.stack([best % w, best // w], dim=1).float()
        torch.testing.assert_close(nearest_upsampled_match_xy(src, trg, (h, w), query, mask), expected)


def test_batched_featurizer_draws_the_same_noise_as_one_call_per_image(smoke_features):
    """Source and edited go through DIFT together; each image's features must equal featurising it alone
    with the generator continuing from the previous image, as the per-image protocol does."""
    from harness.metrics.dift import DiftFeaturizer

    context = MetricContext(smoke_features, device="cpu")
    dift = DiftFeaturizer(context.dift_models(torch.float32), ensemble=3)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for latent in ("sample", "mode"):
        together = dift(images, "a cat", latent, torch.Generator().manual_seed(42))
        g = torch.Generator().manual_seed(42)
        alone = torch.cat([dift(images[i:i + 1], "a cat", latent, g) for i in range(2)])
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(together[0], together[1])


def test_unet_through_up_block_is_the_full_unets_block_output(tiny_sd21_models):
    """DIFT's truncated UNet: bit-identical to `up_blocks[i]`'s output inside the full forward, at latent
    sizes that do and do not divide by the UNet's overall downsampling (the upsample-size path), and it
    leaves the shared UNet itself whole."""
    from harness.diffusion.features import unet_through_up_block

    unet = tiny_sd21_models.unet
    g = torch.Generator().manual_seed(0)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    for index in (0, 1):
        trunk = unet_through_up_block(unet, index)
        for h, w in ((8, 8), (10, 7)):
            x = torch.randn(2, 4, h, w, generator=g)
            captured = []
            handle = unet.up_blocks[index].register_forward_hook(lambda m, i, out: captured.append(out))
            try:
                full = unet(x, 261, encoder_hidden_states=text).sample
            finally:
                handle.remove()
            assert torch.equal(trunk(x, 261, encoder_hidden_states=text, return_dict=False)[0], captured[0])
            assert full.shape == x.shape and torch.equal(unet(x, 261, encoder_hidden_states=text).sample, full)
    with pytest.raises(ValueError, match="out of range"):
        unet_through_up_block(unet, len(unet.up_blocks))


def test_compiled_dift_traces_as_one_graph_and_only_for_the_fixed_shape_protocol(smoke_features, monkeypatch):
    """`features.dift_compile`: the truncated UNet and the VAE encoder must trace without a graph break
    (fullgraph) and, on the eager backend, give the eager features exactly; only `md_dift@regiondrag` (fixed 768² input) compiles,
    and its settings say so."""
    from harness.metrics.dift import DiftFeaturizer

    compiled_with = []
    real_compile = torch.compile

    def eager_backend_compile(module, **kwargs):
        compiled_with.append(kwargs)
        return real_compile(module, backend="eager", **kwargs)  # inductor takes minutes on a 2-core CPU

    monkeypatch.setattr(torch, "compile", eager_backend_compile)
    models = MetricContext(smoke_features, device="cpu").dift_models(torch.float32)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    eager, compiled = DiftFeaturizer(models, ensemble=2), DiftFeaturizer(models, ensemble=2, compiled=True)
    def run(dift):
        return dift(images, "a cat", "mode", torch.Generator().manual_seed(42))

    assert torch.equal(run(compiled), run(eager))
    assert compiled_with == [{"dynamic": False, "fullgraph": True}] * 2  # the UNet trunk and the VAE encoder
    assert models.vae.encoder is eager.vae.encoder is not compiled.vae.encoder  # the shared VAE stays as it was

    context = MetricContext({**smoke_features, "dift_compile": True}, device="cpu")
    assert MdDiftRegionDrag(context).featurizer().compiled and not MdDiftDragDiffusion(context).featurizer().compiled
    assert MdDiftRegionDrag(context).settings()["compiled"].startswith("torch.compile")
    assert "compiled" not in MdDiftRegionDrag(MetricContext(smoke_features, device="cpu")).settings()


def test_metric_cli_reads_feature_options_as_the_config_file_would():
    from harness.metrics.__main__ import apply_feature_options

    features = {"dift_compile": False, "seed": 42, "lpips_backbone": "standard"}
    options = {"dift_compile": "false", "seed": "43", "lpips_backbone": "/w/alex.safetensors", "prompt": "a cat"}
    apply_feature_options(features, options)
    assert features == {"dift_compile": False, "seed": 43, "lpips_backbone": "/w/alex.safetensors"}
    assert options == {"prompt": "a cat"}  # the rest is left for the caller to read or reject
    with pytest.raises(SystemExit, match="seed='\\[42'"):
        apply_feature_options(features, {"seed": "[42"})
