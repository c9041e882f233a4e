"""FreeDrag, diffusion version (LPengYang/FreeDrag @a35d988, `FreeDrag--diffusion--version/`; protocols.md §3.4).

DragDiffusion's pipeline (LoRA, DDIM inversion to t = 681, `up_blocks[2]` features at half resolution,
MasaCtrl start_layer 10 while denoising) with point tracking replaced by two mechanisms:

1. **Template features with adaptive updating.** Each handle keeps a template: the features bilinearly
   sampled on a (2·win_r+1)² window (win_r 4), first taken from the original features at the handle. The
   latent gets at most 5 Adam steps per round so that the features on the window around the point's
   *current target location* match the template (L1, summed over points; stop early when every point's
   loss is below l_expected/2). Then each template becomes xishu·current + (1 − xishu)·template, with
   xishu = 1/(1 + exp(a·(loss − b))), a = ln 9/(0.6·l_expected), b = 0.2·l_expected, or 1 once the point
   is done.
2. **Line search with backtracking.** Before each round, every point not done moves along the segment to
   its target, at most d_max away: of 10 equally spaced candidates, the one whose window's mean feature
   distance to the template is closest to l_expected. If the last round's end loss is not below
   l_expected/2 but below its start loss, the point stays; otherwise it steps back by the same amount and
   takes the closest match on a doubled range. A point is done within 2 px of its target with its end
   loss at most l_expected/2.

The mask term is the *mean* of |Δx_{t−1}| outside the mask (hence λ = 10), applied only when something is
masked. At most `max_step` Adam steps in all. Sampling clamps at the map border (the release indexes out
of range there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from harness.diffusion.ddim_drag import DDIMDragConfig, DDIMDragMethod, DragProblem
from harness.diffusion.drag import REACHED_PX, bilinear_sample, mask_regulariser
from harness.diffusion.features import BlockTap
from harness.diffusion.precision import autocast, grad_scaler
from harness.diffusion.timing import Stopwatch
from harness.registry import METHODS

ROUND_STEPS = 5
CANDIDATES = 10


@dataclass
class FreeDragConfig(DDIMDragConfig):
    METHOD: ClassVar[str] = "freedrag"

    lora_steps: int = 200
    lora_lr: float = 2e-4
    lora_batch_size: int = 4
    lam: float = 10.0
    max_step: int = 300
    l_expected: float = 1.0
    d_max: float = 5.0
    win_r: int = 4
    start_step: int = 0
    start_layer: int = 10


def window_offsets(radius: int) -> torch.Tensor:
    """(K, 2) integer (x, y) offsets of a (2r+1)² window."""
    o = torch.arange(-radius, radius + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(o, o, indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()], dim=-1)


class _Search:
    """FreeDrag's per-point line search (`get_each_point`)."""

    def __init__(self, l_expected: float, d_max: float, offsets: torch.Tensor) -> None:
        self.l_expected, self.d_max, self.offsets = l_expected, d_max, offsets
        self.fractions = torch.arange(1, CANDIDATES + 1, dtype=torch.float32)[:, None] / CANDIDATES

    def _candidates(self, current: torch.Tensor, target: torch.Tensor, reach: float) -> torch.Tensor:
        remaining = float((current - target).norm())
        end = current + min(reach / (remaining + 1e-8), 1.0) * (target - current)
        f = self.fractions.to(current.device)
        return (1 - f) * current + f * end

    def _distances(self, features: torch.Tensor, template: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        sampled = bilinear_sample(features, candidates[:, None, :] + self.offsets.to(candidates.device)[None])
        return (sampled - template[:, None, :]).abs().mean(dim=(0, 2))

    def next_point(self, current: torch.Tensor, target: torch.Tensor, features: torch.Tensor, template: torch.Tensor,
                   loss_start: float, loss_end: float) -> torch.Tensor:
        if loss_end < 0.5 * self.l_expected:
            candidates = self._candidates(current, target, self.d_max)
            return candidates[(self._distances(features, template, candidates) - self.l_expected).abs().argmin()]
        if loss_end < loss_start:
            return current
        remaining = float((current - target).norm())
        current = current - min(self.d_max / (remaining + 1e-8), 1.0) * (target - current)  # roll back
        candidates = self._candidates(current, target, 2 * self.d_max)
        return candidates[self._distances(features, template, candidates).argmin()]


@METHODS.register("freedrag")
class FreeDrag(DDIMDragMethod):
    name = "freedrag"
    Config = FreeDragConfig

    def run(self, problem: DragProblem, watch: Stopwatch) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg, device = self.config, self.models.device
        t, z = self.ddim.timesteps[problem.index], problem.latent
        offsets = window_offsets(cfg.win_r).to(device)
        search = _Search(cfg.l_expected, cfg.d_max, offsets)
        threshold = 0.5 * cfg.l_expected
        a, b = math.log(9.0) / (0.6 * cfg.l_expected), 0.2 * cfg.l_expected
        n = len(problem.handles)
        with watch("drag"), BlockTap(self.models.unet, cfg.feature_block) as tap:
            features_eps = self.features_and_eps(tap, problem)  # graphed while x requires a gradient

            def unet_at(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                features, eps = features_eps(x, t)
                return features, self.ddim.step(eps, t, x)

            def window_features(features: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
                return bilinear_sample(features, point + offsets)

            with torch.no_grad():
                searched_on, x_prev_0 = unet_at(z)
            variable = z.detach().clone().requires_grad_(True)
            optimizer = torch.optim.Adam([variable], lr=cfg.lr)
            scaler = grad_scaler(device)
            use_mask = bool(problem.editable.sum() != 0)
            current = problem.handles.clone()
            templates = [window_features(searched_on, current[k]) for k in range(n)]
            done = torch.zeros(n, dtype=torch.bool)
            loss_start, loss_end = torch.zeros(n), torch.zeros(n)
            steps, updates, rounds = 0, 0, 0
            while not bool(done.all()) and steps <= cfg.max_step:
                rounds += 1
                for k in range(n):
                    if not done[k]:
                        current[k] = search.next_point(current[k], problem.targets[k], searched_on, templates[k],
                                                       float(loss_start[k]), float(loss_end[k]))
                for step in range(ROUND_STEPS):
                    steps += 1
                    if steps > cfg.max_step:
                        break
                    with autocast(device):
                        features, x_prev = unet_at(variable)
                        per_point = torch.stack([F.l1_loss(window_features(features, current[k]), templates[k])
                                                 for k in range(n)])
                        loss = per_point.sum()
                        if use_mask:
                            loss = loss + cfg.lam * mask_regulariser(x_prev.float(), x_prev_0, problem.editable, "mean")
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    updates += 1
                    if step == 0:
                        loss_start = per_point.detach().cpu()
                    if float(per_point.detach().max()) < threshold:
                        break
                with torch.no_grad():
                    features, _ = unet_at(variable)
                    current_features = [window_features(features, current[k]) for k in range(n)]
                    loss_end = torch.stack([F.l1_loss(f, tpl) for f, tpl in zip(current_features, templates)]).cpu()
                done = ((current - problem.targets).norm(dim=-1).cpu() < REACHED_PX) & ~(loss_end > threshold)
                for k in range(n):
                    xishu = 1.0 if done[k] else float(1 / (1 + torch.exp(a * (loss_end[k] - b))))
                    templates[k] = xishu * current_features[k] + (1 - xishu) * templates[k]
                searched_on = features
        with watch("denoise"):
            latent = self.denoise_mutual(problem.latent, variable.detach(), problem.index, problem.text,
                                         cfg.start_step, cfg.start_layer, problem.finite)
        return latent, {"drag_updates": updates, "rounds": rounds,
                        "drag_stopped": "reached" if bool(done.all()) else "max_step",
                        **self.points_info(problem, current)}
