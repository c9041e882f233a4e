"""LPIPS: the harness metric with the shared real AlexNet equals an independent plain-torch LPIPS v0.1
(models.md §4.2) built from the same files; protocol differences between the two ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.metrics.base import MetricContext
from harness.metrics.features import build_lpips_alex
from harness.metrics.lpips_alex import LpipsAlexDragDiffusion, LpipsAlexRegionDrag, ImageFidelityDragDiffusion
from harness.types import DragSample
from tests.conftest import LPIPS_ASSET, shared_path

SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def plain_torch_lpips(a: torch.Tensor, b: torch.Tensor) -> float:
    """LPIPS v0.1 alex written from the published formula, with the asset's conv weights and the
    lpips package's linear heads."""
    import os

    import lpips
    from safetensors.torch import load_file
    from torchvision.models import alexnet

    features = alexnet().features
    features.load_state_dict(load_file(str(LPIPS_ASSET)), strict=True)
    heads = torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/alex.pth"), map_location="cpu")
    taps = {1, 4, 7, 9, 11}

    def feats(x):
        x = (x - SHIFT) / SCALE
        out = []
        for i, layer in enumerate(features):
            x = layer(x)
            if i in taps:
                out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
        return out

    total = 0.0
    with torch.no_grad():
        for k, (fa, fb) in enumerate(zip(feats(a), feats(b))):
            w = heads[f"lin{k}.model.1.weight"]
            total += F.conv2d((fa - fb) ** 2, w).mean().item()
    return total


def images(h=96, w=80, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    return a, b


def sample_of(image):
    return DragSample("t/c/s", image, "", np.zeros((0, 2)), np.zeros((0, 2)), np.ones(image.shape[:2], bool))


@pytest.mark.integration
def test_lpips_with_shared_alexnet_equals_plain_torch_formula():
    shared_path("assets", "lpips", "alexnet_features.safetensors")
    a, b = images()
    metric = LpipsAlexDragDiffusion(MetricContext({"lpips_backbone": str(LPIPS_ASSET)}, device="cpu"))
    ours = metric.compute(sample_of(a), b, {}).value
    ta = F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1, (224, 224), mode="bilinear")
    tb = F.interpolate(torch.from_numpy(b).permute(2, 0, 1)[None].float() / 127.5 - 1, (224, 224), mode="bilinear")
    assert ours == pytest.approx(plain_torch_lpips(ta, tb), rel=1e-5)
    model, identity = build_lpips_alex(str(LPIPS_ASSET))
    assert identity.startswith("lpips-0.1:alex:file-sha256:d46c33bd")
    with torch.no_grad():
        assert ours == pytest.approx(model(ta, tb).item(), rel=1e-6)


def test_lpips_of_identical_images_is_zero_and_if_is_one():
    a, _ = images()
    ctx = MetricContext({"lpips_backbone": "random"}, device="cpu")
    assert LpipsAlexDragDiffusion(ctx).compute(sample_of(a), a, {}).value == pytest.approx(0.0, abs=1e-7)
    assert ImageFidelityDragDiffusion(ctx).compute(sample_of(a), a, {}).value == pytest.approx(1.0, abs=1e-7)


def test_protocols_differ_only_in_the_resize_to_source():
    """@dragdiffusion PIL-resizes a differently sized edit to the source first; @regiondrag does not."""
    a, b = images(96, 80)
    small = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(b).resize((40, 48)))
    ctx = MetricContext({"lpips_backbone": "random"}, device="cpu")
    same_dd = LpipsAlexDragDiffusion(ctx).compute(sample_of(a), b, {}).value
    same_rd = LpipsAlexRegionDrag(ctx).compute(sample_of(a), b, {}).value
    assert same_dd == pytest.approx(same_rd, rel=1e-6)  # on the CPU both run in float32
    assert LpipsAlexDragDiffusion(ctx).compute(sample_of(a), small, {}).value != pytest.approx(
        LpipsAlexRegionDrag(ctx).compute(sample_of(a), small, {}).value, rel=1e-4)


def test_bad_backbone_file_is_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file({"features.0.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="wrong.safetensors"):
        build_lpips_alex(str(path))
    with pytest.raises(FileNotFoundError, match="missing"):
        build_lpips_alex(str(tmp_path / "missing.safetensors"))
