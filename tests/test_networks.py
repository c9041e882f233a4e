"""The metrics' transformers networks (`harness.metrics.networks`): one `features.<field>` grammar for the
@pbe CLIP ViT-B/32 and PIE-Bench's CLIP ViT-L/14 and DINO: local directories load the same weights,
random variants are seeded without touching the global RNG, and failures name the field."""
from __future__ import annotations

import pytest
import torch

from harness.metrics import pie_networks
from harness.metrics.base import MetricContext
from harness.metrics.clip_vit import build_clip_vit_b32
from harness.metrics.networks import NetworkWeightsError, seeded


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_seeded_builds_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = seeded(7, lambda: torch.rand(4))
    assert torch.equal(first, seeded(7, lambda: torch.rand(4)))
    assert torch.equal(torch.rand(3), expected)


def test_clip_vit_b32_from_a_local_directory(tmp_path):
    model, identity = build_clip_vit_b32("random_tiny", seed=3)
    assert identity == "clip-vit-b32-tiny:random-seed3"
    model.save_pretrained(tmp_path / "clip")
    loaded, identity = build_clip_vit_b32(str(tmp_path / "clip"))
    assert identity == f"clip-vit-b32:{tmp_path / 'clip'}" and same_weights(model, loaded) and not loaded.training


def test_clip_vitl14_from_a_local_directory(tmp_path):
    model, tokenizer, processor, identity = pie_networks.build_clip("random_tiny")
    assert identity == "random_tiny:clip-vit-l14-arch:seed0"
    for part in (model, tokenizer, processor):
        part.save_pretrained(tmp_path / "clip")
    loaded, tokenizer2, processor2, identity = pie_networks.build_clip(str(tmp_path / "clip"))
    assert identity == f"pretrained:{tmp_path / 'clip'}" and same_weights(model, loaded)
    assert tokenizer2("a cat").input_ids == tokenizer("a cat").input_ids
    assert processor2.to_dict() == processor.to_dict()


@pytest.mark.parametrize("field", ["clip_vit_b32", "clip_vitl14", "dino_vitb8"])
def test_missing_or_empty_directories_name_the_features_field(tmp_path, field):
    build = {"clip_vit_b32": build_clip_vit_b32, "clip_vitl14": pie_networks.build_clip,
             "dino_vitb8": pie_networks.build_dino}[field]
    with pytest.raises(NetworkWeightsError, match=rf"features\.{field}='.*nope': .*nope is not a directory; set "
                                                  rf"features\.{field} to a hub id .* random / random_tiny"):
        build(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NetworkWeightsError, match=rf"features\.{field}='.*empty': cannot load the weights"):
        build(str(tmp_path / "empty"))


def test_metric_context_surfaces_the_error_as_an_oserror(tmp_path):
    context = MetricContext({"clip_vitl14": str(tmp_path / "missing")}, device="cpu")
    with pytest.raises(OSError, match=r"features\.clip_vitl14"):  # the metric CLI reports OSErrors as missing weights
        pie_networks.clip(context)
