"""`clip_region@pbe`: Paint-by-Example's region CLIP score (`eval_tool/clip_score/region_clip_score.py` +
`test_bench_dataset.py` @52a7e37, protocols.md §5).

Per sample, as released:
1. the result → `ToTensor` → CLIP mean/std (full image);
2. crop to the box: the first and last mask pixel of the flattened mask (raster order) give
   `[row_first:row_last, col_first:col_last]`, end-exclusive — the box's last row and column are left out,
   and for a non-rectangular mask the columns come from those two pixels only (`region_box`);
3. the crop → `T.Resize([224, 224])` on the tensor: bilinear, `align_corners=False`, **no antialiasing**
   (torchvision 0.12 of the reference environment; current torchvision would antialias downscaled crops);
4. the reference → PIL `.resize((224, 224))` (a squash; bicubic, Pillow's default) → RGB → ToTensor → CLIP
   mean/std;
5. 100 · cos of the two CLIP ViT-B/32 image embeddings (fp16 on the GPU). No clipping at 0.
The score is the mean over samples.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.metrics.base import Metric, MetricValue
from harness.metrics.clip_vit import ClipImageEmbedding, clip_normalize, shared_clip_vit_b32
from harness.registry import METRICS
from harness.types import ExemplarSample


def region_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(row_first, row_last, col_first, col_last) of the reference's crop `[r0:r1, c0:c1]` (end-exclusive)."""
    flat = np.flatnonzero(np.asarray(mask).ravel())
    if flat.size == 0:
        raise ValueError("clip_region@pbe: the mask is empty")
    (r0, r1), (c0, c1) = np.unravel_index([flat[0], flat[-1]], np.shape(mask))
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"clip_region@pbe: the box crop [{r0}:{r1}, {c0}:{c1}] is empty (the reference slices "
                         f"from the mask's first to its last pixel in raster order, end-exclusive)")
    return int(r0), int(r1), int(c0), int(c1)


def _unit_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 → (3, H, W) float in [0, 1], as `ToTensor`."""
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 255.0


def region_crop(edited: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """(1, 3, 224, 224) CLIP-normalised crop of the result to the mask's box."""
    r0, r1, c0, c1 = region_box(mask)
    crop = clip_normalize(_unit_tensor(edited))[:, r0:r1, c0:c1]
    return F.interpolate(crop[None], size=(224, 224), mode="bilinear", align_corners=False, antialias=False)


def reference_input(reference: np.ndarray) -> torch.Tensor:
    """(1, 3, 224, 224) CLIP-normalised reference, PIL-squashed to 224×224."""
    image = np.asarray(Image.fromarray(reference).resize((224, 224), Image.BICUBIC).convert("RGB"))
    return clip_normalize(_unit_tensor(image))[None]


@METRICS.register("clip_region@pbe")
class ClipRegionPbe(Metric):
    id = "clip_region@pbe"
    families = ("exemplar",)
    higher_is_better = True

    def extractor(self) -> ClipImageEmbedding:
        return shared_clip_vit_b32(self.context)

    def compute(self, sample: ExemplarSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        if edited.shape[:2] != sample.mask.shape:
            raise ValueError(f"clip_region@pbe: output {edited.shape[:2]} and mask {sample.mask.shape} sizes differ")
        with torch.inference_mode():
            embeddings = self.extractor().embed(torch.cat([region_crop(edited, sample.mask),
                                                           reference_input(sample.reference)])).float()
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
        return MetricValue(float(100.0 * (embeddings[0] @ embeddings[1])), info={"box": list(region_box(sample.mask))})

    def settings(self) -> dict[str, Any]:
        return dict(self.extractor().describe(),
                    input="result ToTensor+CLIP norm, box crop [first:last) of the raster mask, bilinear 224 "
                          "(no antialias); reference PIL bicubic squash 224 + CLIP norm")
