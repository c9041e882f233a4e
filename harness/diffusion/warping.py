"""Inpaint4Drag's bidirectional warp (Visual-AI/Inpaint4Drag @126ac0c, `utils/drag.py::bi_warp`;
protocols_2025.md §1).

The user's region moves as a piece of rubber: every pixel of a region follows the inverse-distance-weighted
motion of its nearest control points (forward pass), then every pixel of the moved region looks up where it
came from through the inverse field (backward pass), which leaves no holes. What the warp uncovers, plus a
band around the moved contour, is the inpainting mask.

Exactness: the same torch operations in the same order (cdist, topk, normalised inverse distances, rounding)
on the CPU, so outputs equal the release's bit for bit (tests/test_warping.py). The release runs them on the
GPU when one is present, where cdist may round differently; here they always run on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

MAX_REFERENCES = 100  # references beyond this are subsampled evenly (linspace over their raster order)
NEAREST = 4  # the interpolator's k
MATCH_EPS = 1e-6  # a handle belongs to a region when it equals one of its pixels


@dataclass(frozen=True)
class WarpResult:
    """Per moved pixel: `source` and `target` (x, y) int32 (M, 2); `inpaint_mask` uint8 {0, 1} H×W."""

    source: np.ndarray
    target: np.ndarray
    inpaint_mask: np.ndarray


def interpolate(points: torch.Tensor, references: torch.Tensor, directions: torch.Tensor,
                round_single: bool = False) -> torch.Tensor:
    """Move each point by the inverse-distance-weighted mean direction of its (up to) 4 nearest references,
    rounded to whole pixels. Q-1: with exactly one reference the release returns the translation unrounded
    (later truncated by `.int()`); `round_single=True` rounds it like every other case."""
    if len(points) == 0 or len(references) == 0:
        return points
    if len(references) == 1:
        moved = points + directions
        return moved.round() if round_single else moved
    if len(references) > MAX_REFERENCES:
        keep = torch.linspace(0, len(references) - 1, MAX_REFERENCES).long()
        references, directions = references[keep], directions[keep]
    distances, nearest = torch.topk(torch.cdist(points, references), k=min(NEAREST, len(references)), dim=1,
                                    largest=False)
    weights = 1.0 / (distances + 1e-6)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (points + (weights.unsqueeze(-1) * directions[nearest]).sum(dim=1)).round().float()


def fill_contour(contour: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (x, y) int32 in raster order inside a filled contour, and the filled uint8 {0, 1} mask."""
    mask = np.zeros(shape, dtype=np.uint8)
    if len(contour):
        cv2.drawContours(mask, [contour.reshape(-1, 1, 2)], -1, 1, cv2.FILLED)
    return np.column_stack(np.nonzero(mask)).astype(np.int32)[:, [1, 0]], mask


def _handles_in(region: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The control pairs whose source is one of the region's pixels (exactly: the release's cdist < 1e-6)."""
    if len(region) == 0 or len(sources) == 0:
        return sources[:0], targets[:0]
    inside = torch.cdist(sources, region).min(dim=1)[0] < MATCH_EPS
    return sources[inside], targets[inside]


def odd_kernel(kernel_size: int) -> int:
    """The release's kernel rule: negative → 0 (no band, no dilation), even → the next odd size."""
    kernel_size = max(0, kernel_size)
    return kernel_size + 1 if kernel_size and kernel_size % 2 == 0 else kernel_size


def bi_warp(region_mask: np.ndarray, points: np.ndarray, kernel_size: int = 5, round_single: bool = False) -> WarpResult:
    """Warp every region of `region_mask` (H×W, > 0 = region) by the control `points` ((2N, 2) (x, y),
    alternating handle, target). Steps as released:

    - regions are the external contours (holes are filled: a ring moves as a disc); a region with no handle
      on one of its pixels is neither moved nor inpainted;
    - forward: the contour vertices and the region's pixels move by `interpolate` (references: the handles);
    - backward: each pixel of the filled moved contour takes the source given by `interpolate` with the moved
      pixels as references (subsampled to 100) and the reverse motions; out-of-image sources are dropped;
    - inpaint mask: (sources ∧ ¬targets) dilated by a k×k square, OR the moved contour drawn k pixels thick
      (the release's docstring says (k−1)·2; the code draws k).
    """
    kernel_size = odd_kernel(kernel_size)
    shape = region_mask.shape[:2]
    controls = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(-1, 2)
    handles, targets = controls[0:-1:2], controls[1::2]
    source_union = np.zeros(shape, dtype=np.uint8)
    target_union = np.zeros(shape, dtype=np.uint8)
    band = np.zeros(shape, dtype=np.uint8)
    contours = cv2.findContours((region_mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    moved_sources, moved_targets = [], []
    for contour in contours:
        region_np, source_mask = fill_contour(contour[:, 0, :], shape)
        if len(region_np) == 0:
            continue
        region = torch.from_numpy(region_np).float()
        handle, target = _handles_in(region, handles, targets)
        if len(handle) == 0:
            continue
        motion = target - handle
        target_contour = interpolate(torch.from_numpy(contour[:, 0, :]).float(), handle, motion, round_single)
        moved = interpolate(region, handle, motion, round_single)
        target_contour_np = target_contour.int().numpy()
        target_np, target_mask = fill_contour(target_contour_np, shape)
        if len(target_np) == 0:
            continue
        if kernel_size:
            cv2.drawContours(band, [target_contour_np], -1, 1, kernel_size)
        target_pixels = torch.from_numpy(target_np).float()
        origin = interpolate(target_pixels, moved, region - moved, round_single)
        valid = (origin[:, 0] >= 0) & (origin[:, 0] < shape[1]) & (origin[:, 1] >= 0) & (origin[:, 1] < shape[0])
        if valid.any():
            moved_sources.append(origin[valid])
            moved_targets.append(target_pixels[valid])
            source_union |= source_mask
            target_union |= target_mask
    if not moved_sources:
        empty = np.zeros((0, 2), dtype=np.int32)
        return WarpResult(empty, empty.copy(), np.zeros(shape, dtype=np.uint8))
    uncovered = (source_union & (1 - target_union)).astype(np.uint8)
    if kernel_size:
        uncovered = cv2.dilate(uncovered, np.ones((kernel_size, kernel_size), dtype=np.uint8))
    return WarpResult(torch.cat(moved_sources).numpy().astype(np.int32), torch.cat(moved_targets).numpy().astype(np.int32),
                      (uncovered | band).astype(np.uint8))


def preview(image: np.ndarray, warp: WarpResult) -> np.ndarray:
    """The warped preview: a copy of `image` with each target pixel set to its source pixel (a fancy-index
    copy, so where targets repeat the last one wins, as released)."""
    out = image.copy()
    out[warp.target[:, 1], warp.target[:, 0]] = image[warp.source[:, 1], warp.source[:, 0]]
    return out


def grid_overlay(image: np.ndarray, inpaint_mask: np.ndarray) -> np.ndarray:
    """The app's preview paint (`ui_utils.py::preview_out_image`): inpaint pixels become white with black
    every 10th row and column; this image is what the app inpaints. The benchmark script does not paint."""
    background = np.full(inpaint_mask.shape, 255, dtype=image.dtype)
    background[::10] = 0
    background[:, ::10] = 0
    return np.where(inpaint_mask[..., None] == 1, background[..., None], image)
