"""`copy_paste`: pixel-space copy-paste baseline — moves the handle content onto the target, no diffusion.

It anchors the leaderboards: a diffusion method that cannot beat a pixel copy on MD is not dragging
anything. What it copies depends on what the sample gives:

- drawn regions (`sample.regions`, e.g. the demo): the whole handle region, warped onto the target region
  — polygons with the affine (3 vertices) or perspective (4 vertices) map of the handle vertices onto the
  target vertices (`cv2.warpAffine`/`warpPerspective`, bilinear), brushed masks translated by the
  difference of the two masks' centroids — and pasted inside the target region;
- dense region pairs only (DragBench-DR/-SR's `meta_data_region.pkl`, `regions=from_points`): each pair is
  one latent cell (RegionDrag stores latent-grid coordinates × 8), so the 8×8 pixel block at the handle is
  copied to the block at the target; copying single pixels would leave a dotted pattern;
- sparse points only: a square patch of half-size `radius` around each handle, copied to its target.

The source stays under the pasted content (it is a copy, not a move). With regions, `dataset.point_fraction`
does not change the output: the warp uses the regions themselves, not their subsampled dense pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from harness.method import EditMethod
from harness.regions import LATENT_SCALE
from harness.registry import METHODS
from harness.types import DragSample, EditResult, RegionPair

CELL = round(1 / LATENT_SCALE)  # pixels per latent cell: the unit of a dense pair


@dataclass
class CopyPasteConfig:
    radius: int = 8  # half-size of the square patch copied per sparse point pair


def paste_region(out: np.ndarray, source: np.ndarray, region: RegionPair) -> None:
    """Paste `region`'s handle content of `source` inside its target region of `out` (in place)."""
    h, w = source.shape[:2]
    if region.kind == "polygon":
        handle, target = region.handle.astype(np.float32), region.target.astype(np.float32)
        if len(target) == 3:
            warped = cv2.warpAffine(source, cv2.getAffineTransform(handle, target), (w, h),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        else:
            warped = cv2.warpPerspective(source, cv2.getPerspectiveTransform(handle, target), (w, h),
                                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = np.zeros((h, w), np.uint8)
        cv2.fillPoly(inside, [np.round(region.target).astype(np.int32)], 1)
        out[inside.astype(bool)] = warped[inside.astype(bool)]
        return
    dx, dy = mask_shift(region)
    ys, xs = np.nonzero(region.target)
    sy, sx = ys - dy, xs - dx
    ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    out[ys[ok], xs[ok]] = source[sy[ok], sx[ok]]


def mask_shift(region: RegionPair) -> tuple[int, int]:
    """The integer (dx, dy) that moves a brushed handle mask's centroid onto the target mask's."""
    (hy, hx), (ty, tx) = (np.argwhere(m).mean(axis=0) for m in (region.handle, region.target))
    return int(round(tx - hx)), int(round(ty - hy))


def paste_blocks(out: np.ndarray, source: np.ndarray, handles: np.ndarray, targets: np.ndarray, top_left: int,
                 size: int) -> None:
    """Copy the `size`×`size` block of `source` starting `top_left` pixels before each handle to the block at
    its target, clipped to the image (in place)."""
    h, w = source.shape[:2]
    dy, dx = np.mgrid[0:size, 0:size] - top_left
    for (hx, hy), (tx, ty) in zip(handles.astype(int), targets.astype(int)):
        sy, sx, ty_, tx_ = hy + dy, hx + dx, ty + dy, tx + dx
        ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w) & (ty_ >= 0) & (ty_ < h) & (tx_ >= 0) & (tx_ < w)
        out[ty_[ok], tx_[ok]] = source[sy[ok], sx[ok]]


@METHODS.register("copy_paste")
class CopyPaste(EditMethod):
    name = "copy_paste"
    needs_model = False
    Config = CopyPasteConfig

    def edit(self, sample: DragSample, seed: int) -> EditResult:
        source = sample.image
        out = source.copy()
        if sample.regions:
            for region in sample.regions:
                paste_region(out, source, region)
            return EditResult(image=out, info={"copied": "regions", "pairs": len(sample.regions)})
        if sample.dense_handles is not None:
            paste_blocks(out, source, sample.dense_handles, sample.dense_targets, 0, CELL)
            return EditResult(image=out, info={"copied": "cells", "pairs": int(len(sample.dense_handles))})
        r = self.config.radius
        paste_blocks(out, source, sample.handles, sample.targets, r, 2 * r + 1)
        return EditResult(image=out, info={"copied": "patches", "pairs": int(len(sample.handles))})
