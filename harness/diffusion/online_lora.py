"""DragLoRA's drag step (Sylvie-X/DragLoRA @4276544, `utils/drag_utils_lora.py`; protocols_2025.md §3).

DragLoRA optimises a LoRA, not the latent, and moves the latent itself only through ILFA. The pieces here
are the ones its loop is made of, each written so that it can be checked against the release on fixed
tensors (tests/test_draglora.py):

- `track_closer`: the handle moves to the nearest neighbour (L1 *averaged* over channels) of its initial
  feature within the (2r_p+1)² window, but only among pixels no farther from the target than the handle
  ("distance-closer"), or, with `region="angle"` (the paper's fast variant, hard-wired off in the release,
  Q-17), within 30° of the handle→target direction. It also returns minD, each point's minimum distance
  rounded to 2 decimals, which drives the mode logic.
- `interpolate_patch`: the release's bilinear patch (`interpolate_feature_patch`), with its slicing as is.
- `drag_loss`: Σ 9·L1(f0 patch at the *initial* handle, F1 patch one unit step towards the target).
- `dds_loss`: 25·MSE(x̂0, sg[x̂0 − (1−ᾱ_τ)(ε_ori − ε_lora)]) at a random τ.
- `ModeSwitch`: the "only-ILFA" (`ada`) mode and the revert-on-low-confidence logic.
- `ilfa`: DDIM step t→t−20 with the updated LoRA, renoised back to t, blended into the original latent
  inside the mask (Q-14: nothing changes when the mask is empty).

Points are (x, y) on the supervision grid; the release indexes (row, col), i.e. (y, x). Windows and
candidate orders follow the release's row-major enumeration, so argmin ties resolve the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

REACH_PX = 2.0
TRACK_REGIONS = ("distance", "angle")


def _window(center: torch.Tensor, radius: int, hw: tuple[int, int]) -> torch.Tensor:
    """(K, 2) integer (row, col) of the clipped window, row-major as the release's meshgrid."""
    r, c = int(center[1]), int(center[0])
    rows = torch.arange(max(0, r - radius), min(hw[0], r + radius + 1))
    cols = torch.arange(max(0, c - radius), min(hw[1], c + radius + 1))
    gr, gc = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([gr.flatten(), gc.flatten()], dim=1)


@torch.no_grad()
def track_closer(reference: torch.Tensor, features: torch.Tensor, handles: torch.Tensor, handles_init: torch.Tensor,
                 targets: torch.Tensor, radius: int, region: str = "distance") -> tuple[torch.Tensor, tuple[float, ...]]:
    """New handles and minD (`point_tracking`). With `region="angle"` a point within 1 px of its target is
    skipped and contributes no minD, as in the release."""
    if region not in TRACK_REGIONS:
        raise ValueError(f"tracking region must be one of {TRACK_REGIONS}, got {region!r}")
    new, min_d = handles.clone(), []
    for i in range(len(handles)):
        f0 = reference[0, :, int(handles_init[i][1]), int(handles_init[i][0])]
        coords = _window(handles[i], radius, features.shape[-2:])
        p_rc = torch.stack([handles[i][1], handles[i][0]]).cpu()
        t_rc = torch.stack([targets[i][1], targets[i][0]]).cpu().float()
        if region == "angle":
            direction = t_rc - p_rc
            if direction.norm() < 1:
                continue
            vectors = coords - p_rc
            vectors = vectors / (vectors.norm(dim=1, keepdim=True) + 1e-8)
            coords = coords[(vectors * (direction / direction.norm())).sum(dim=1) >= math.cos(math.radians(30))]
        else:
            coords = coords[(coords - t_rc).norm(dim=1) <= (p_rc - t_rc).norm()]
        neighbours = features[0][:, coords[:, 0], coords[:, 1]]
        distance = (f0[:, None] - neighbours).abs().mean(dim=0)
        min_d.append(round(distance.min().item(), 2))
        best = coords[distance.argmin().item()]
        new[i, 0], new[i, 1] = float(best[1]), float(best[0])
    return new, tuple(min_d)


def interpolate_patch(feat: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor, x1: torch.Tensor,
                      x2: torch.Tensor) -> torch.Tensor:
    """Bilinear patch between float corners (`interpolate_feature_patch`): the four integer-shifted slices
    weighted by the fractional offset (slices past the map end are truncated, as Python slices are)."""
    x0, y0 = torch.floor(x1).long(), torch.floor(y1).long()
    dx, dy = torch.floor(x2).long() - x0, torch.floor(y2).long() - y0
    xc, yc = x0 + 1, y0 + 1
    wa = (xc.float() - x1) * (yc.float() - y1)
    wb = (xc.float() - x1) * (y1 - y0.float())
    wc = (x1 - x0.float()) * (yc.float() - y1)
    wd = (x1 - x0.float()) * (y1 - y0.float())
    ia = feat[:, :, y0:y0 + dy, x0:x0 + dx]
    ib = feat[:, :, yc:yc + dy, x0:x0 + dx]
    ic = feat[:, :, y0:y0 + dy, xc:xc + dx]
    id_ = feat[:, :, yc:yc + dy, xc:xc + dx]
    return ia * wa + ib * wb + ic * wc + id_ * wd


def _bounds(point: torch.Tensor, radius: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    r, c = int(point[1]), int(point[0])
    return max(0, r - radius), min(hw[0], r + radius + 1), max(0, c - radius), min(hw[1], c + radius + 1)


def fixed_patches(reference: torch.Tensor, handles: torch.Tensor, radius: int) -> list[torch.Tensor]:
    """The f0 patches at the initial handles (clipped windows), fixed for the whole drag."""
    hw = reference.shape[-2:]
    out = []
    for p in handles:
        r1, r2, c1, c2 = _bounds(p, radius, hw)
        out.append(reference[:, :, r1:r2, c1:c2].detach())
    return out


def drag_loss(patches: list[torch.Tensor], features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
              radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ (2r+1)²·L1(f0 patch, F1 patch shifted one unit towards the target) over points ≥ 2 px from their
    targets, and the expected positions after the step (`curTs`: handle + unit step, or the target)."""
    hw = features.shape[-2:]
    loss, expected = features.new_zeros(()), []
    for i in range(len(handles)):
        p, t = handles[i], targets[i]
        if (t - p).norm() < REACH_PX:
            expected.append(t)
            continue
        d = (t - p) / (t - p).norm()
        r1, r2, c1, c2 = _bounds(p, radius, hw)
        f1 = interpolate_patch(features, r1 + d[1], r2 + d[1], c1 + d[0], c2 + d[0])
        expected.append(p + d)
        loss = loss + (2 * radius + 1) ** 2 * F.l1_loss(patches[i], f1)
    return loss, torch.stack(expected)


def dds_target(pred_x0: torch.Tensor, eps_ori: torch.Tensor, eps_lora: torch.Tensor, alpha_tau: float) -> torch.Tensor:
    """sg[x̂0 − (1 − ᾱ_τ)(ε_ori − ε_lora)] (NaNs of the correction zeroed, as released)."""
    return (pred_x0 - torch.nan_to_num((1 - alpha_tau) * (eps_ori - eps_lora))).detach()


def dds_loss(pred_x0: torch.Tensor, target: torch.Tensor, lam_dds: float) -> torch.Tensor:
    """0.5·λ_dds·MSE (λ_dds 50 as released: 25·MSE)."""
    return 0.5 * lam_dds * F.mse_loss(pred_x0.float(), target.float())


@dataclass
class ModeSwitch:
    """The release's mode logic around tracking (`drag_diffusion_update`), as a state machine.

    `ada` is the only-ILFA mode: no loss step, only ILFA, until the handles stop moving for more than 5
    iterations or the tracking confidence drops (min minD > 1.3). Outside it, low confidence (max minD >
    1.3) reverts the uncertain handles at most 3 times in a row and repeats the step index."""

    ada: bool = False
    retain: int = 0
    nomove: int = 0
    events: list[str] = field(default_factory=list)

    def update(self, step_idx: int, min_d: tuple[float, ...], handles: torch.Tensor, previous: torch.Tensor,
               expected: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """Handles and step index after tracking at `step_idx` gave `handles` (from `previous`) and `min_d`;
        `expected` are the last loss step's expected positions."""
        if not min_d:  # every point skipped by the angle region: the release would fail on min(())
            return handles, step_idx
        if not self.ada:
            if step_idx > 10 and min(min_d) < 1.0:
                if expected is not None and float((handles - expected).norm()) < 1.4:
                    self.ada = True
                    self.events.append(f"ilfa_only_on@{step_idx}")
            elif max(min_d) > 1.3:
                self.retain += 1
                if self.retain <= 3:
                    handles = handles.clone()
                    for i, d in enumerate(min_d):
                        if d > 1.3:
                            handles[i] = previous[i]
                    step_idx -= 1
                else:
                    self.retain = 0
            elif self.retain > 0:
                self.retain = 0
        else:
            if torch.equal(handles, previous):
                self.nomove += 1
            if min(min_d) > 1.3 or self.nomove > 5:
                self.nomove, self.ada = 0, False
                self.events.append(f"ilfa_only_off@{step_idx}")
        return handles, step_idx


def ilfa(x_next: torch.Tensor, noise: torch.Tensor, alpha_ratio: torch.Tensor, editable: torch.Tensor,
         original: torch.Tensor) -> torch.Tensor:
    """Input-latent feature adaptation: renoise the one-step prediction back to t
    (√a·z̃ + √(1−a)·ε, a = ᾱ_t/ᾱ_{t−Δ}) inside the mask; outside it the original latent."""
    renoised = alpha_ratio ** 0.5 * x_next + (1 - alpha_ratio) ** 0.5 * noise
    return (renoised * editable + original * (1 - editable)).detach()
