"""`md_dino@regiondrag`: RegionDrag's mean distance with DINOv2 features instead of DIFT
(`region_utils/evaluator.py`, `method='dino'`; protocols_2025.md §6.1b: only RegionDrag offers it).

Identical to `md_dift@regiondrag` (disc-union search region, distances ÷ (W, H), mean over points then
images, tables ×100) except for the features: both images nearest-resized to **840²**, DINOv2-base in float16
(float32 on the CPU), `last_hidden_state` without the class token reshaped to the **60×60** patch grid
(840 / 14), nearest-upsampled to H×W. As released, the network gets the [−1, 1] image without ImageNet
normalisation, and no noise is involved (the metric is deterministic).

`features.dinov2_base`: a hub id or local directory of a transformers `Dinov2Model` checkpoint
(`facebook/dinov2-base`, the reference), `random` (the exact base architecture with seeded random weights) or
`random_tiny` (the same patch grid with tiny widths, for CPU tests).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from harness.metrics.base import Metric, MetricValue
from harness.metrics.md_dift import regiondrag_distance
from harness.metrics.networks import RANDOM_SPECS, load_network
from harness.registry import METRICS
from harness.types import DragSample

RESOLUTION, GRID = 840, 60  # 840 / patch 14
DINOV2_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, patch_size=14,
                   image_size=518, layerscale_value=1.0, layer_norm_eps=1e-6)
DINOV2_TINY = dict(DINOV2_BASE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
RANDOM_SEED = 0


def build_dinov2(spec: str) -> tuple[torch.nn.Module, str]:
    """(`Dinov2Model` in eval mode, identity) for `features.dinov2_base`."""
    from transformers import Dinov2Config, Dinov2Model

    architectures = {"random": DINOV2_BASE, "random_tiny": DINOV2_TINY}
    model = load_network(spec, "features.dinov2_base", lambda s: Dinov2Model(Dinov2Config(**architectures[s])),
                         Dinov2Model.from_pretrained, RANDOM_SEED)
    identity = f"{spec}:dinov2-base-arch:seed{RANDOM_SEED}" if spec in RANDOM_SPECS else f"pretrained:{spec}"
    return model.eval(), identity


def dino_featuremap(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, 840, 840) → (B, C, 60, 60): the patch tokens of the last layer (class token dropped), laid out
    row-major on the patch grid as the released `view(1, -1, 60, 60)` does."""
    tokens = model(pixel_values=images).last_hidden_state[:, 1:, :]
    return tokens.permute(0, 2, 1).reshape(len(images), -1, GRID, GRID)


@METRICS.register("md_dino@regiondrag")
class MdDinoRegionDrag(Metric):
    id = "md_dino@regiondrag"
    families = ("drag",)
    table_scale = 100.0

    def network(self) -> tuple[torch.nn.Module, str, torch.dtype]:
        spec = str(self.context.features.get("dinov2_base", "facebook/dinov2-base"))
        dtype = self.context.dtype(torch.float16)

        def build() -> tuple[torch.nn.Module, str, torch.dtype]:
            model, identity = build_dinov2(spec)
            return model.to(self.context.device, dtype).requires_grad_(False), identity, dtype

        return self.context.shared(("dinov2_base", spec, dtype), build)

    def compute(self, sample: DragSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        model, _, dtype = self.network()

        def featurize(pair: torch.Tensor) -> torch.Tensor:  # one image per call, as the reference
            with torch.no_grad():
                return torch.cat([dino_featuremap(model, image[None]) for image in pair])

        return regiondrag_distance(sample, edited, self.context.device, dtype, RESOLUTION, featurize)

    def settings(self) -> dict[str, Any]:
        _, identity, dtype = self.network()
        return {"network": identity, "dtype": str(dtype).replace("torch.", ""),
                "input": f"[-1,1] (no ImageNet normalisation) nearest {RESOLUTION}x{RESOLUTION}",
                "features": f"last_hidden_state patch tokens {GRID}x{GRID}, nearest to HxW",
                "search": "union of discs radius max(d/sqrt2, 5)"}
