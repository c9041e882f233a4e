"""Motion supervision, point tracking and the mask regulariser on a feature grid (DragDiffusion family).

Points are float tensors (N, 2) of (x, y) on the supervision grid (half the image resolution): the
released code scales pixel points to that grid and rounds them (`to_grid`). Feature maps are (1, C, h, w).

- **Motion supervision** (`motion_supervision`): for each handle h not yet within 2 px of its target t,
  with d = (t − h)/‖t − h‖ · min(step, ‖t − h‖), the L1 distance between a detached reference patch and the
  current features bilinearly sampled on the same patch shifted by d, times a weight ((2r + 1)² by
  default). DragDiffusion's reference patch is the current features at h; GoodDrag's is the *original*
  features at the *initial* handle (`reference`, `reference_points`), with step 4 and weight (2r)².
- **Point tracking** (`track_points`): each handle moves to the nearest neighbour (L1 over channels) of its
  initial feature F0[h₀] within a (2r + 1)² window around its current position.
- **Mask regulariser** (`mask_regulariser`): |x_{t−1}(z) − x_{t−1}(z₀)| outside the editable mask, summed
  (DragDiffusion, DragNoise, GoodDrag) or averaged (FreeDrag).

Border handling. DragDiffusion clips windows to the map (`border="clip"`). DragNoise and GoodDrag slice
without clipping: a tracking window that starts left of or above the map selects nothing and the
released code stops with an error (`border="none"` reproduces that as a `PointTrackingError`), one that
leaves on the right or bottom is truncated as Python slicing truncates it. Patches are always sampled with
clipped windows and border padding, which equals every released variant wherever the latter runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.diffusion.deterministic_grad import grid_sample_border
from harness.diffusion.precision import autocast, grad_scaler

REACHED_PX = 2.0  # "within 2 px" on the supervision grid, in every released variant
BORDERS = ("clip", "none")


class PointTrackingError(RuntimeError):
    """A tracking window left the feature map where the released code has no border protection."""


def to_grid(points: np.ndarray, image_hw: tuple[int, int], grid_hw: tuple[int, int]) -> torch.Tensor:
    """Pixel (x, y) → supervision grid (x, y): `round(x / W · w)`, `round(y / H · h)` (half to even)."""
    p = torch.tensor(np.array(points, dtype=np.float64), dtype=torch.float32).reshape(-1, 2)
    scale = torch.tensor([grid_hw[1] / image_hw[1], grid_hw[0] / image_hw[0]])
    return torch.round(p * scale)


def from_grid(points: torch.Tensor, image_hw: tuple[int, int], grid_hw: tuple[int, int]) -> np.ndarray:
    """Supervision grid (x, y) → pixel (x, y) (for records)."""
    scale = np.array([image_hw[1] / grid_hw[1], image_hw[0] / grid_hw[0]])
    return points.detach().cpu().numpy().astype(np.float64) * scale


def reached(handles: torch.Tensor, targets: torch.Tensor, tol: float = REACHED_PX) -> bool:
    return bool(((handles - targets).norm(dim=-1) < tol).all())


def bilinear_sample(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Features (1, C, h, w) at float (x, y) positions (..., 2) → (C, ...), bilinear, border-clamped (with a
    deterministic backward under `deterministic=true`: harness/diffusion/deterministic_grad.py)."""
    h, w = features.shape[-2:]
    p = points.to(features.device, features.dtype)
    grid = torch.stack([2 * p[..., 0] / max(w - 1, 1) - 1, 2 * p[..., 1] / max(h - 1, 1) - 1], dim=-1)
    flat = grid.reshape(1, 1, -1, 2)
    out = grid_sample_border(features, flat)
    return out.reshape(features.shape[1], *points.shape[:-1])


def _offsets(center: torch.Tensor, others: list[torch.Tensor], radius: int, size: int) -> torch.Tensor:
    """Integer offsets in [−r, r] that keep every given centre coordinate inside [0, size)."""
    o = torch.arange(-radius, radius + 1, device=center.device)
    keep = torch.ones_like(o, dtype=torch.bool)
    for c in (center, *others):
        keep &= (int(c) + o >= 0) & (int(c) + o < size)
    return o[keep]


def motion_supervision(features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, radius: int, *,
                       reference: tuple[torch.Tensor, torch.Tensor] | None = None,
                       step: float = 1.0, weight: float | None = None) -> torch.Tensor:
    """Σ over handles not yet within 2 px of their target of weight · L1(reference patch, shifted patch).
    `reference`: (feature map, points) the reference patches are cut from (GoodDrag: the original features
    at the original handles); None: the current features at the current handles, detached."""
    reference, reference_points = reference if reference is not None else (None, None)
    h, w = features.shape[-2:]
    weight = (2 * radius + 1) ** 2 if weight is None else weight
    loss = features.new_zeros(())
    for i in range(len(handles)):
        hi, ti = handles[i], targets[i]
        dist = (ti - hi).norm()
        if dist < REACHED_PX:
            continue
        d = (ti - hi) / dist * min(step, float(dist))
        ref_map = features.detach() if reference is None else reference
        ref_pt = hi if reference_points is None else reference_points[i]
        ox = _offsets(hi[0], [ref_pt[0]], radius, w)
        oy = _offsets(hi[1], [ref_pt[1]], radius, h)
        rows, cols = (int(ref_pt[1]) + oy).to(features.device), (int(ref_pt[0]) + ox).to(features.device)
        f0 = ref_map[0][:, rows][:, :, cols]
        gy, gx = torch.meshgrid(oy.float(), ox.float(), indexing="ij")
        shifted = torch.stack([hi[0].floor() + gx + d[0], hi[1].floor() + gy + d[1]], dim=-1)
        f1 = bilinear_sample(features, shifted)
        loss = loss + weight * F.l1_loss(f1, f0.detach())
    return loss


@torch.no_grad()
def track_points(reference: torch.Tensor, features: torch.Tensor, handles: torch.Tensor,
                 handles_init: torch.Tensor, radius: int, border: str = "clip") -> torch.Tensor:
    """New handle positions: argmin of ‖F[p] − F0[h₀]‖₁ over the window of radius r around each handle."""
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    h, w = features.shape[-2:]
    new = handles.clone()
    for i in range(len(handles)):
        x0, y0 = (int(v) for v in handles_init[i])
        f0 = reference[0, :, y0, x0]
        cx, cy = (int(v) for v in handles[i])
        top, left = cy - radius, cx - radius
        if border == "none" and (top < 0 or left < 0):
            raise PointTrackingError(
                f"handle {i} at grid ({cx}, {cy}): the tracking window (radius {radius}) starts outside the feature "
                f"map, where the released code has no border protection and fails (use the 'intended' variant)")
        top, left = max(top, 0), max(left, 0)
        window = features[0, :, top:min(cy + radius + 1, h), left:min(cx + radius + 1, w)]
        distance = (window - f0[:, None, None]).abs().sum(0)
        row, col = divmod(int(distance.argmin()), distance.shape[-1])
        new[i, 0], new[i, 1] = left + col, top + row
    return new


def mask_regulariser(x_prev: torch.Tensor, x_prev_0: torch.Tensor, editable: torch.Tensor,
                     reduction: str = "sum") -> torch.Tensor:
    """|x_{t−1}(z) − x_{t−1}(z₀)| outside the editable mask (1 = editable), summed or averaged."""
    diff = ((x_prev - x_prev_0) * (1.0 - editable)).abs()
    return diff.sum() if reduction == "sum" else diff.mean()


@dataclass
class DragLoop:
    """DragDiffusion's `drag_diffusion_update` loop (also DragNoise's, on another variable)."""

    n_steps: int = 80
    lr: float = 0.01
    r_m: int = 1
    r_p: int = 3
    lam: float = 0.1
    border: str = "clip"
    regularise_empty_mask: bool = False  # DragNoise applies the mask term even when nothing is masked


@dataclass
class DragOutcome:
    variable: torch.Tensor
    handles: torch.Tensor
    steps: int  # optimiser updates made
    stopped: str  # "reached" | "max_steps"
    losses: list[float] = field(default_factory=list)  # motion-supervision term before each update
    distances: list[float] = field(default_factory=list)  # mean handle–target distance before each update


Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def optimise_drag(forward: Forward, variable: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor],
                  handles: torch.Tensor, targets: torch.Tensor, editable: torch.Tensor, loop: DragLoop) -> DragOutcome:
    """Optimise `variable` with Adam so the handle features move to the targets.

    `forward(variable) -> (features on the supervision grid, one-step DDIM prediction x_{t−1})`;
    `reference` is what `forward` gave before any update (the features points are tracked against, and the
    x_{t−1} the mask regulariser holds the uneditable area to). Each
    iteration: forward; from the second on, track the handles; stop if all are within 2 px; otherwise
    step on motion supervision + λ · mask regulariser (skipped when nothing is masked, unless
    `regularise_empty_mask`).
    """
    reference_features, x_prev_0 = reference
    device = variable.device
    variable = variable.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([variable], lr=loop.lr)
    scaler = grad_scaler(device)
    handles_init, handles = handles.clone(), handles.clone()
    use_mask = loop.regularise_empty_mask or bool(editable.sum() != 0)
    outcome = DragOutcome(variable, handles, 0, "max_steps")
    for step in range(loop.n_steps):
        with autocast(device):
            features, x_prev = forward(variable)
            if step:
                handles = track_points(reference_features, features, handles, handles_init, loop.r_p, loop.border)
            if reached(handles, targets):
                outcome.stopped = "reached"
                break
            supervision = motion_supervision(features, handles, targets, loop.r_m)
            loss = supervision
            if use_mask:
                loss = loss + loop.lam * mask_regulariser(x_prev.float(), x_prev_0, editable)
        outcome.losses.append(float(supervision.detach()))
        outcome.distances.append(float((handles - targets).norm(dim=-1).mean()))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        outcome.steps += 1
    outcome.variable, outcome.handles = variable.detach(), handles
    return outcome
