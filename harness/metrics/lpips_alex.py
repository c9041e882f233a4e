"""LPIPS (AlexNet, v0.1) under the two drag-benchmark protocols (protocols.md §2.2, §2.3).

- `lpips_alex@dragdiffusion`: the edit is PIL-bilinear resized to the source size, both go to [-1, 1],
  bilinear to 224×224 (`align_corners=False`), LPIPS in float32. Papers print IF = 1 − LPIPS
  (`if@dragdiffusion`).
- `lpips_alex@regiondrag`: no resize to the source size; both images go straight to 224×224 bilinear,
  LPIPS in float16 (on the GPU); tables show ×100.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.metrics.base import Metric, MetricValue
from harness.registry import METRICS
from harness.types import DragSample


def to_unit_range(image: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 H×W×3 → (1, 3, H, W) in [-1, 1] as `x / 127.5 − 1`."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).to(device) / 127.5 - 1
    return x.permute(2, 0, 1)[None].to(dtype)


def pil_resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize to (width, height), as the DragDiffusion scripts do."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


class _LpipsAlex(Metric):
    dtype: ClassVar[torch.dtype] = torch.float32
    resize_to_source: ClassVar[bool] = True

    def _lpips(self, sample: DragSample, edited: np.ndarray) -> float:
        dtype = self.context.dtype(self.dtype)
        model, _ = self.context.lpips_alex(dtype)
        if self.resize_to_source:
            edited = pil_resize_bilinear(edited, sample.size)
        a = F.interpolate(to_unit_range(sample.image, self.context.device, dtype), (224, 224), mode="bilinear")
        b = F.interpolate(to_unit_range(edited, self.context.device, dtype), (224, 224), mode="bilinear")
        with torch.no_grad():
            return float(model(a, b).float().item())

    def compute(self, sample: DragSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        return MetricValue(self._lpips(sample, edited))

    def settings(self) -> dict[str, Any]:
        dtype = self.context.dtype(self.dtype)
        return {"network": self.context.lpips_alex(dtype)[1], "dtype": str(dtype).replace("torch.", ""),
                "input": "[-1,1] bilinear 224x224" + (", edit PIL-bilinear to source size first" if self.resize_to_source else "")}


@METRICS.register("lpips_alex@dragdiffusion")
class LpipsAlexDragDiffusion(_LpipsAlex):
    id = "lpips_alex@dragdiffusion"
    families = ("drag",)


@METRICS.register("if@dragdiffusion")
class ImageFidelityDragDiffusion(_LpipsAlex):
    id = "if@dragdiffusion"
    higher_is_better = True

    def compute(self, sample: DragSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        return MetricValue(1.0 - self._lpips(sample, edited))


@METRICS.register("lpips_alex@regiondrag")
class LpipsAlexRegionDrag(_LpipsAlex):
    id = "lpips_alex@regiondrag"
    dtype = torch.float16
    resize_to_source = False
    table_scale = 100.0
