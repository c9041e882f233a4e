"""Region pairs → dense handle/target point pairs, following RegionDrag's UI code (`ui_utils.py`).

All mappings run on the latent grid (`scale = 1/8`) and the returned pairs are multiplied by 8, exactly as
RegionDrag stores them in `meta_data_region.pkl`; its `drag()` floor-divides by 8 again. Rounding follows
the reference: cv2 rasterisation of int32-truncated vertices and int32 truncation of warped coordinates.

- polygons: an affine (3 vertices) or perspective (4 vertices) transform from the *target* polygon to
  the handle polygon; every target pixel is mapped back to one handle pixel (no holes);
- brushed masks: the target's x-extent is rescaled linearly onto the handle's x-extent, then each
  target column's y-extent onto the handle's y-extent in the column it maps to.
"""
from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

from harness.types import RegionPair

LATENT_SCALE = 1 / 8


def polygon_pair_to_points(handle: np.ndarray, target: np.ndarray, scale: float = LATENT_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """Dense (handle, target) int pairs on the grid `scale` for one triangle or quadrilateral pair."""
    handle = np.asarray(handle, dtype=np.float32) * np.float32(scale)
    target = np.asarray(target, dtype=np.float32) * np.float32(scale)
    if handle.shape != target.shape or len(target) not in (3, 4) or target.shape[1:] != (2,):
        raise ValueError(f"polygon regions need 3 or 4 (x, y) vertices on both sides, got {handle.shape} and {target.shape}")
    affine = len(target) == 3
    matrix = (cv2.getAffineTransform if affine else cv2.getPerspectiveTransform)(target, handle)
    vertices = target.astype(np.int32)
    x_max, y_max = vertices.max(axis=0) + 1
    raster = np.zeros((y_max, x_max), dtype=np.uint8)
    cv2.fillPoly(raster, [vertices], 1)
    inside = np.column_stack(np.where(raster == 1))[:, [1, 0]]
    warped = (cv2.transform if affine else cv2.perspectiveTransform)(np.array([inside], dtype=np.float32), matrix)
    return warped[0].astype(np.int32), inside.astype(np.int32)


def mask_pair_to_points(handle: np.ndarray, target: np.ndarray, scale: float = LATENT_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """Dense (handle, target) int pairs for one pair of brushed masks (RegionDrag `region_pair_to_pts`)."""
    handle = np.asarray(handle, dtype=np.uint8)
    target = np.asarray(target, dtype=np.uint8)
    if handle.shape != target.shape or handle.ndim != 2:
        raise ValueError(f"brushed regions must be two 2-D masks of one shape, got {handle.shape} and {target.shape}")
    size = (int(handle.shape[1] * scale), int(handle.shape[0] * scale))
    src = cv2.resize(handle, size).astype(bool)
    trg = cv2.resize(target, size).astype(bool)
    if not src.any() or not trg.any():
        raise ValueError("a brushed region is empty on the latent grid (regions smaller than 8×8 pixels vanish)")
    h, w = src.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    trg_pts = np.stack([rows[trg], cols[trg]], axis=-1)

    src_x_min, src_x_max = cols[src].min(), cols[src].max()
    trg_x_min, trg_x_max = cols[trg].min(), cols[trg].max()
    scale_x = (src_x_max - src_x_min) / max(trg_x_max - trg_x_min, np.float32(1e-4))
    mapped_x = np.where(trg, (cols - trg_x_min) * scale_x + src_x_min, np.float32(0)).astype(np.float32)

    src_y_min = np.where(src, rows, np.inf).min(axis=0)
    src_y_max = np.where(src, rows, -np.inf).max(axis=0)
    trg_y_min = np.where(trg, rows, np.inf).min(axis=0)
    trg_y_max = np.where(trg, rows, -np.inf).max(axis=0)
    column = mapped_x.astype(np.int32)
    lo, hi = src_y_min[column], src_y_max[column]
    with np.errstate(invalid="ignore"):
        scale_y = (hi - lo) / np.maximum(trg_y_max - trg_y_min, np.float32(1e-4))
        mapped_y = (rows - trg_y_min) * scale_y + lo
    warped = np.stack([mapped_y[trg], mapped_x[trg]], axis=-1)
    keep = np.isfinite(warped).all(axis=1)  # target columns mapped onto empty handle columns
    return warped[keep][:, [1, 0]].astype(np.int32), trg_pts[keep][:, [1, 0]].astype(np.int32)


def regions_to_dense_points(regions: Iterable[RegionPair]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated dense pairs of all regions, in pixel units (latent-grid pairs × 8)."""
    handles, targets = [], []
    for region in regions:
        fn = polygon_pair_to_points if region.kind == "polygon" else mask_pair_to_points
        h, t = fn(region.handle, region.target)
        handles.append(h)
        targets.append(t)
    if not handles:
        raise ValueError("no regions given")
    return np.concatenate(handles).astype(np.float64) * 8, np.concatenate(targets).astype(np.float64) * 8


def subsample_pairs(handles: np.ndarray, targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep a seeded random `fraction` of the pairs (at least one), in their original order.

    The knob of RegionDrag's point-percentage ablation.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"point fraction must be in (0, 1], got {fraction}")
    n = len(handles)
    keep = max(1, int(round(n * fraction)))
    if keep >= n:
        return handles, targets
    index = np.sort(np.random.default_rng(seed).choice(n, size=keep, replace=False))
    return handles[index], targets[index]
