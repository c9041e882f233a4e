"""FastDrag's one-step latent warpage and BNNI hole filling (XuanjiaZ/FastDrag @def3c4e,
`utils/continuous_drag.py::drag_stretch_multipoint_ratio_interp` and `interpolation`; protocols_2025.md §2).

Every latent position C inside the mask moves by a weighted sum of the handles' drags, each scaled by how far
C is from the edge of a circle around the mask: a handle's drag is applied in full at the handle and fades to
zero on the circle, so the region stretches instead of tearing. Moved values are written first-writer-wins;
the positions left empty are filled by bilateral nearest-neighbour interpolation (BNNI).

Exactness: the same float32 operations as the release, vectorised over positions (equal bit for bit,
tests/test_warping.py); coordinates are (row, col) on the latent grid, as the release's are.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def circle(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre O (row, col) of the bounding box of `mask > 0` and radius R = |O − top-left corner|, measured
    as the release does with `PairwiseDistance` (which adds eps = 1e-6 to the difference)."""
    index = torch.nonzero(mask.reshape(mask.shape[-2:]) > 0)
    if len(index) == 0:
        raise ValueError("fastdrag: the mask is empty on the latent grid (the release crashes on it too)")
    top_left = index.min(dim=0)[0].float()
    bottom_right = index.max(dim=0)[0].float()
    centre = torch.stack(((top_left[0] + bottom_right[0]) / 2, (top_left[1] + bottom_right[1]) / 2))
    return centre, F.pairwise_distance(centre, top_left, p=2.0, eps=1e-6)


def stretch_scale(cells: torch.Tensor, handle: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Per cell C: |PC| / |AP| where P is where the ray from the handle A through C leaves the circle. NaN
    where C == A (0/0, Q-7) and everywhere when A lies outside the circle (sqrt of a negative)."""
    to_handle = handle - centre
    d_oa = torch.linalg.vector_norm(to_handle)
    ac = cells - handle
    d_ac = torch.linalg.vector_norm(ac, dim=1)
    unit = ac / d_ac[:, None]
    l0 = (ac * to_handle).sum(dim=1) / d_ac
    l1 = torch.sqrt(radius ** 2 - d_oa ** 2 + l0 ** 2)
    ap = (l1 - l0)[:, None] * unit
    return torch.linalg.vector_norm(ac - ap, dim=1) / torch.linalg.vector_norm(ap, dim=1)


def displacement(cells: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """d(C) = Σᵢ wᵢ sᵢ (Bᵢ − Aᵢ) with wᵢ ∝ 1 / (|C − Aᵢ| + 1e-4) (rows: cells, (row, col) float32)."""
    centre, radius = circle(mask)
    moves, inverse = [], []
    for handle, target in zip(handles, targets):
        moves.append(stretch_scale(cells, handle, centre, radius)[:, None] * (target - handle))
        inverse.append(1 / (torch.linalg.vector_norm(cells - handle, dim=1) + 0.0001))
    weights = torch.stack(inverse, dim=1)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (weights[:, :, None] * torch.stack(moves, dim=1)).sum(dim=1)


def warp_latent(latent: torch.Tensor, mask: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Z′ from Z (1, C, h, w): masked positions (mask > 0, (1, 1, h, w)) emptied to 0 in every channel, then each
    masked cell C (raster order) writes Z[C] to q = clamp(round(C + d(C))) unless q was written already.
    `handles`/`targets`: (N, 2) (row, col) on the latent grid, float32. Cells whose displacement is NaN
    (Q-7) write nothing: the release's `int(nan)` raises, is caught, and its stale target is already taken
    (at the very first cell the release crashes instead)."""
    inside = mask.reshape(mask.shape[-2:]) > 0
    cells_long = torch.nonzero(inside)
    cells = cells_long.float()
    h, w = inside.shape
    moved = torch.round(cells + displacement(cells, handles.float(), targets.float(), mask))
    ok = ~torch.isnan(moved).any(dim=1)
    moved = torch.round(moved[ok])  # the release rounds twice (a no-op) before int()
    rows = moved[:, 0].long().clamp(0, h - 1)
    cols = moved[:, 1].long().clamp(0, w - 1)
    first = np.unique((rows * w + cols).cpu().numpy(), return_index=True)[1]  # the first writer of each cell
    first = torch.from_numpy(np.sort(first)).to(rows.device)
    source = cells_long[ok][first]
    out = latent.clone()
    out[:, :, inside] = 0
    out[:, :, rows[first], cols[first]] = latent[:, :, source[:, 0], source[:, 1]]
    return out


def bnni(latent: torch.Tensor) -> torch.Tensor:
    """Fill, in place and in raster order, every position whose channel 0 is exactly 0 (decided before the
    scan) with the 1/k-weighted mean of the nearest non-empty neighbour to its left, right, above and below
    (k = steps away). Q-8: positions filled earlier in the scan count as non-empty. The arithmetic is the
    release's: Python-float weights times the latent's dtype, summed in that dtype in the order left, right,
    up, down, divided by the weights' sum."""
    for b in range(latent.shape[0]):
        x = latent[b]
        filled = (x[0] != 0).cpu().numpy()
        empty = np.argwhere(~filled)
        n, m = filled.shape
        values_cpu = x.cpu()
        for i, j in empty:
            picks = []
            for di, dj in ((0, -1), (0, 1), (-1, 0), (1, 0)):
                k, r, c = 1, i, j
                while 0 <= (r := i + di * k) < n and 0 <= (c := j + dj * k) < m:
                    if filled[r, c]:
                        picks.append((1 / k, r, c))
                        break
                    k += 1
            if picks:
                total = sum(weight for weight, _, _ in picks)
                value = sum(weight * values_cpu[:, r, c] for weight, r, c in picks) / total
                values_cpu[:, i, j] = value
                filled[i, j] = bool(value[0] != 0)
        latent[b] = values_cpu.to(latent.device)
    return latent
