"""Region pairs → dense handle/target point pairs, following RegionDrag's UI code (`ui_utils.py`).

All mappings run on the latent grid (`scale = 1/8`) and the returned pairs are multiplied by 8, exactly as
RegionDrag stores them in `meta_data_region.pkl`; its `drag()` floor-divides by 8 again. Rounding follows
the reference: cv2 rasterisation of int32-truncated vertices and int32 truncation of warped coordinates.

- polygons: an affine (3 vertices) or perspective (4 vertices) transform from the *target* polygon to
  the handle polygon; every target pixel is mapped back to one handle pixel (no holes);
- brushed masks: the target's x-extent is rescaled linearly onto the handle's x-extent, then each
  target column's y-extent onto the handle's y-extent in the column it maps to;
- a drawn region plus sparse point pairs (`region_to_points`, RegionDrag's "region + points" input): the
  region moves by inverse-distance weighting of the displacements of the handle points inside it.
"""
from __future__ import annotations

from typing import Any, Iterable

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


def _idw_move(points: np.ndarray, references: np.ndarray, displacements: np.ndarray, dtype: Any,
              neighbours: int = 4, max_references: int = 100) -> np.ndarray:
    """Move `points` by the inverse-distance-weighted displacement of their nearest references.

    As RegionDrag's `interpolate_points`: at most `max_references` references (evenly spaced by a float32
    linspace, truncated), the `neighbours` nearest with weights 1/(d + 1e-4), arithmetic in `dtype`
    (float16 in the reference), rounded; with a single reference it is a plain translation truncated
    toward zero. Ties in distance go to the earlier reference (the reference's CUDA sort promises no
    order; a fixed rule keeps the pairs identical across machines).
    """
    import torch

    pts = torch.from_numpy(np.ascontiguousarray(points)).to(dtype)
    refs = torch.from_numpy(np.ascontiguousarray(references)).to(dtype)
    moves = torch.from_numpy(np.ascontiguousarray(displacements)).to(dtype)
    if len(refs) < 2:
        return (pts + moves).int().numpy()
    if len(refs) > max_references:
        index = torch.linspace(0, len(refs) - 1, steps=max_references).long()
        refs, moves = refs[index], moves[index]
    # Coordinates are integers, so float32 differences are exact and rounding the float32 norm to float16
    # equals the reference's half-precision norm (float accumulation), several times faster on a CPU.
    work = torch.promote_types(dtype, torch.float32)
    distance = torch.linalg.vector_norm(pts.to(work)[:, None, :] - refs.to(work)[None, :, :], dim=-1).to(dtype)
    # The k nearest with ties broken by reference index: distances between integer points that differ do so
    # by more than 100·2⁻²⁰, so adding index·2⁻²⁰ makes every key unique without reordering distinct ones.
    key = distance.double() + torch.arange(len(refs), dtype=torch.float64) * 2.0 ** -20
    nearest = torch.topk(key, min(neighbours, len(refs)), dim=1, largest=False, sorted=True).indices
    inverse = 1 / (torch.gather(distance, 1, nearest) + 1e-4)
    weight = inverse / inverse.sum(dim=1, keepdim=True)
    return (pts + (weight[..., None] * moves[nearest]).sum(dim=1)).round().int().numpy()


def _filled_pixels(outline: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The filled polygon `outline` rasterised on a grid of `shape`: (bool raster, (x, y) pixels row-major)."""
    raster = np.zeros(shape, dtype=np.uint8)
    cv2.drawContours(raster, [np.asarray(outline, np.int32).reshape(-1, 1, 2)], -1, color=1, thickness=cv2.FILLED)
    ys, xs = np.nonzero(raster)
    return raster.astype(bool), np.stack([xs, ys], axis=1).astype(np.int32)


def region_to_points(mask: np.ndarray, handles: np.ndarray, targets: np.ndarray, scale: float = LATENT_SCALE,
                     dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Dense (handle, target) int pairs on the grid `scale` from a drawn region and sparse point pairs.

    RegionDrag's `region_to_points`: for each outer contour of the (bilinearly resized) mask, the handle
    points inside the filled contour steer it. The contour and the region's pixels are moved by IDW of
    those handles' displacements; the moved contour is rasterised as the target region, and each target
    pixel is mapped back to a source pixel by IDW of the reverse displacements (backward mapping, so the
    target region has no holes). Pairs leaving the grid are dropped; contours without a handle point give
    none. `dtype` defaults to float16, the reference's precision.
    """
    import torch

    dtype = torch.float16 if dtype is None else dtype
    mask = np.asarray(mask).astype(np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"the region must be a 2-D mask, got shape {mask.shape}")
    grid = (int(mask.shape[0] * scale), int(mask.shape[1] * scale))
    small = cv2.resize(mask, (grid[1], grid[0]))
    contours = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    src_pts = (np.asarray(handles, dtype=np.float64).reshape(-1, 2) * scale).astype(np.int32)
    trg_pts = (np.asarray(targets, dtype=np.float64).reshape(-1, 2) * scale).astype(np.int32)
    on_grid = ((src_pts >= 0) & (src_pts < [grid[1], grid[0]])).all(axis=1)

    sources, targets_out = [np.zeros((0, 2), np.int32)], [np.zeros((0, 2), np.int32)]
    for contour in contours:
        outline = contour[:, 0, :]
        inside, region = _filled_pixels(outline, grid)
        steering = on_grid.copy()
        steering[on_grid] = inside[src_pts[on_grid, 1], src_pts[on_grid, 0]]
        if not steering.any():
            continue
        src, trg = src_pts[steering], trg_pts[steering]
        moved_outline = _idw_move(outline, src, trg - src, dtype)
        moved_region = _idw_move(region, src, trg - src, dtype)
        _, target_region = _filled_pixels(moved_outline, grid)
        back = _idw_move(target_region, moved_region, region - moved_region, dtype)
        keep = ((back >= 0) & (back < [grid[1], grid[0]]) & (target_region >= 0)
                & (target_region < [grid[1], grid[0]])).all(axis=1)
        sources.append(back[keep])
        targets_out.append(target_region[keep])
    return np.concatenate(sources).astype(np.int32), np.concatenate(targets_out).astype(np.int32)


def region_and_points_to_dense(mask: np.ndarray, handles: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`region_to_points` on the latent grid, in pixel units (× 8) as RegionDrag's UI stores them."""
    h, t = region_to_points(mask, handles, targets)
    return h.astype(np.float64) * 8, t.astype(np.float64) * 8


def kept_pair_count(n: int, fraction: float) -> int:
    """How many of `n` pairs `subsample_pairs` keeps (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"point fraction must be in (0, 1], got {fraction}")
    return min(n, max(1, int(round(n * fraction))))


def subsample_pairs(handles: np.ndarray, targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep a seeded random `fraction` of the pairs (at least one), in their original order.

    The knob of RegionDrag's point-percentage ablation.
    """
    n = len(handles)
    keep = kept_pair_count(n, fraction)
    if keep >= n:
        return handles, targets
    index = np.sort(np.random.default_rng(seed).choice(n, size=keep, replace=False))
    return handles[index], targets[index]
