"""`copy_paste`: pixel-space copy-paste baseline — moves pixels from handles to targets, no diffusion.

With regions it copies every dense pair's pixel (RegionDrag's UI preview does the same); with sparse
points it copies a square patch of half-size `radius` around each handle to its target. It anchors the
leaderboards: a diffusion method that cannot beat a pixel copy on MD is not dragging anything.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import DragSample, EditResult


@dataclass
class CopyPasteConfig:
    radius: int = 8  # half-size of the square patch copied per sparse point pair


@METHODS.register("copy_paste")
class CopyPaste(EditMethod):
    name = "copy_paste"
    needs_model = False
    Config = CopyPasteConfig

    def edit(self, sample: DragSample, seed: int) -> EditResult:
        source = sample.image
        out = source.copy()
        h, w = source.shape[:2]
        if sample.dense_handles is not None:
            src = np.clip(sample.dense_handles.astype(int), 0, [w - 1, h - 1])
            dst = np.clip(sample.dense_targets.astype(int), 0, [w - 1, h - 1])
            out[dst[:, 1], dst[:, 0]] = source[src[:, 1], src[:, 0]]
            return EditResult(image=out, info={"pairs": int(len(src))})
        r = self.config.radius
        for (hx, hy), (tx, ty) in zip(sample.handles.astype(int), sample.targets.astype(int)):
            dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
            sy, sx, ty_, tx_ = hy + dy, hx + dx, ty + dy, tx + dx
            ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w) & (ty_ >= 0) & (ty_ < h) & (tx_ >= 0) & (tx_ < w)
            out[ty_[ok], tx_[ok]] = source[sy[ok], sx[ok]]
        return EditResult(image=out, info={"pairs": int(len(sample.handles))})
