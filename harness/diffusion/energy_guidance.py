"""Energy guidance for drag editing (DragonDiffusion / DiffEditor, MC-E/DragonDiffusion @f9b5bdf;
protocols_2025.md §5): the drag's box masks and latent patch copy, and the feature-correspondence energy
whose gradient is added to the noise prediction.

- `drag_boxes` (`src/utils/utils.py::process_drag`): features live at scale s = 4 (twice the latent
  resolution); each handle gets a 3×3 box at handle//s (`mask_tar`) and each target one at target//s
  (`mask_cur`), the centre clipped to [1, dim − 2] — Q-23: x is clipped with the *height* (`clip_x_by`
  `height`, as released, or `width`). `mask_other` is the nearest-downsampled mask < 0.5.
- `copy_latent_patches`: z_T is edited in place, the 3×3 latent patch at (target box centre)//2 taking
  the patch at (handle box centre)//2, one point after another (Python slice semantics at the border).
- `drag_energy` (`Sampler.guidance_drag`): with sim = (cos + 1)/2 between current and reference features,
  L_edit = Σ_levels Σ_points [w_edit/(1 + 4·mean sim(cur@target box, ref@handle box)) + w_inpaint·mean
  sim(cur, ref on the handle box minus the overlap)] / (levels · points) and L_con = Σ_levels
  w_content/(1 + 4·mean sim on `mask_other`) / levels; pixels of two boxes pair up in raster order.
- `guidance_from_energy`: 0.04·(∇(s·L_edit)·M + ∇(s·L_con)·(1 − M)), M the mask at latent resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CLIP_X_BY = ("height", "width")


@dataclass
class DragBoxes:
    """`process_drag`'s masks on the feature grid (H/s × W/s), one box per point."""

    handle: list[torch.Tensor]  # release `mask_tar`: (h, w) bool boxes at the handles
    target: list[torch.Tensor]  # release `mask_cur`: boxes at the targets
    other: torch.Tensor  # (1, 1, h, w) bool: outside the editing mask
    handle_centres: list[tuple[int, int]]  # clipped (row, col) box centres
    target_centres: list[tuple[int, int]]


def drag_boxes(mask: torch.Tensor, handles: list[tuple[float, float]], targets: list[tuple[float, float]],
               scale: float = 4.0, clip_x_by: str = "height") -> DragBoxes:
    """`mask` (H, W) float 0/1 at the working resolution; points (x, y) in its pixels."""
    if clip_x_by not in CLIP_X_BY:
        raise ValueError(f"clip_x_by must be one of {CLIP_X_BY}, got {clip_x_by!r}")
    hw = (int(mask.shape[-2] // scale), int(mask.shape[-1] // scale))
    other = F.interpolate(mask[None, None].float(), hw) < 0.5
    x_limit = hw[0] - 2 if clip_x_by == "height" else hw[1] - 2
    boxes = DragBoxes([], [], other, [], [])
    for points, masks, centres in ((handles, boxes.handle, boxes.handle_centres),
                                   (targets, boxes.target, boxes.target_centres)):
        for x, y in points:
            row, col = int(np.clip(y // scale, 1, hw[0] - 2)), int(np.clip(x // scale, 1, x_limit))
            box = torch.zeros(hw, dtype=torch.bool, device=mask.device)
            box[row - 1:row + 2, col - 1:col + 2] = True
            masks.append(box)
            centres.append((row, col))
    return boxes


PATCH_BORDERS = ("as_released", "clamp")


def copy_latent_patches(latent: torch.Tensor, boxes: DragBoxes, up_scale: int = 2,
                        border: str = "as_released") -> torch.Tensor:
    """In place, as released: latent[target patch] ← latent[handle patch], point after point. A patch
    centred on the last latent row or column is cut to 2 rows/columns by the slice and the release fails
    there (`as_released`: a ValueError naming the switch); `clamp` moves such centres one cell inwards."""
    if border not in PATCH_BORDERS:
        raise ValueError(f"latent_patch_border must be one of {PATCH_BORDERS}, got {border!r}")
    h, w = latent.shape[-2:]
    for (hr, hc), (tr, tc) in zip(boxes.handle_centres, boxes.target_centres):
        hr, hc, tr, tc = hr // up_scale, hc // up_scale, tr // up_scale, tc // up_scale
        if border == "clamp":
            hr, tr = (min(max(v, 1), h - 2) for v in (hr, tr))
            hc, tc = (min(max(v, 1), w - 2) for v in (hc, tc))
        target, source = latent[:, :, tr - 1:tr + 2, tc - 1:tc + 2], latent[:, :, hr - 1:hr + 2, hc - 1:hc + 2]
        if target.shape != source.shape:
            raise ValueError(f"the 3×3 latent patch at ({tr}, {tc}) ← ({hr}, {hc}) crosses the {h}×{w} latent's border, "
                             "where the release fails too (latent_patch_border=clamp moves it inside)")
        latent[:, :, tr - 1:tr + 2, tc - 1:tc + 2] = source  # the release's assignment, overlaps included
    return latent


def _pixels(features: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """(n, C) feature vectors inside the box, in raster order (the release's masked `view(C, -1)`)."""
    return features[0][:, box].permute(1, 0)


def _sim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.cosine_similarity(a, b, dim=1) + 1.0) / 2.0


@dataclass(frozen=True)
class DragWeights:
    w_edit: float = 4.0
    w_content: float = 6.0
    w_inpaint: float = 0.2


def drag_energy(current: list[torch.Tensor], reference: list[torch.Tensor], boxes: DragBoxes,
                weights: DragWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_edit, L_con) over the feature levels (each (1, C, h, w) on the box grid)."""
    loss_edit = current[0].new_zeros(())
    for cur, ref in zip(current, reference):
        for handle, target in zip(boxes.handle, boxes.target):
            loss_edit = loss_edit + weights.w_edit / (1 + 4 * _sim(_pixels(cur, target), _pixels(ref, handle)).mean())
            non_overlap = handle & ~(handle & target)
            loss_edit = loss_edit + weights.w_inpaint * _sim(_pixels(cur, non_overlap), _pixels(ref, non_overlap)).mean()
    loss_con = current[0].new_zeros(())
    for cur, ref in zip(current, reference):
        sim_other = (F.cosine_similarity(ref, cur, dim=1)[0][boxes.other[0, 0]] + 1.0) / 2.0
        loss_con = loss_con + weights.w_content / (1 + 4 * sim_other.mean())
    return loss_edit / len(current) / len(boxes.handle), loss_con / len(current)


def guidance_from_energy(latent: torch.Tensor, losses: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor,
                         energy_scale: float, factor: float = 4e-2) -> torch.Tensor:
    """factor·(∇(s·L_edit)·M + ∇(s·L_con)·(1 − M)); `latent` requires grad, `mask` (H, W) at any size."""
    loss_edit, loss_con = losses
    grad_edit = torch.autograd.grad(loss_edit * energy_scale, latent, retain_graph=True)[0]
    grad_con = torch.autograd.grad(loss_con * energy_scale, latent)[0]
    m = (F.interpolate(mask[None, None].to(latent.dtype), latent.shape[-2:]) > 0).to(latent.dtype)
    return grad_edit.detach() * factor * m + grad_con.detach() * factor * (1 - m)


def upsampled(features: list[torch.Tensor], up_scale: int = 2) -> list[torch.Tensor]:
    """Every level nearest-resized to `up_scale` × the last level's size (the release's `up_ft` handling)."""
    size = (features[-1].shape[-2] * up_scale, features[-1].shape[-1] * up_scale)
    return [F.interpolate(f, size) for f in features]
