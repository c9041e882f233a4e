"""GoodDrag (zewei-Zhang/GoodDrag @fc01bc1, `bench_gooddrag.py` + `pipeline.py`; protocols.md §3.6).

AlDD, alternating drag and denoising:
1. LoRA (70 steps, lr 5e-4, batch 4, one batch of crops encoded once); DDIM inversion with the *empty
   prompt* at strength 0.75 (round(37.5) = 38 steps → t = 741).
2. The original latent is denoised for `drag_end_step` steps to record, at each, the `up_blocks[2]` features
   (half resolution) and the one-step output x_{t−1}.
3. At each of those first `drag_end_step` timesteps, `track_per_step` tracking rounds on the current
   latent, each of at most `max_drag_per_track` Adam steps (lr 0.02), then point tracking (r2 12) against
   the original features at that timestep. **Information-preserving motion supervision**: the reference
   patch is always the *original* features at the *initial* handle (r1 4), compared with the current
   features at h + d·min(4, ‖t − h‖), weight (2·r1)². Plus λ·Σ|Δx_{t−1}| outside the mask (always).
   Dragging stops for good when every handle is within 2 px, or after `max_track_no_change` consecutive
   tracks that left the handles where they were. Then one denoising step of [original, edited].
4. The remaining steps denoise [original, edited] with MasaCtrl (start_step 0, start_layer 10).

Point tracking has no border protection in the release (`point_tracking_border=as_released` fails a
sample whose window starts outside the map, as the released bench does; `intended` clips).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness.diffusion.attention_control import MutualSelfAttention, controlled_attention
from harness.diffusion.ddim_drag import DDIMDragConfig, DDIMDragMethod, DragProblem
from harness.diffusion.drag import mask_regulariser, motion_supervision, reached, track_points
from harness.diffusion.features import BlockTap
from harness.diffusion.precision import autocast, grad_scaler
from harness.diffusion.timing import Stopwatch
from harness.registry import METHODS

BORDERS = {"as_released": "none", "intended": "clip"}


@dataclass
class GoodDragConfig(DDIMDragConfig):
    METHOD: ClassVar[str] = "gooddrag"

    lora_steps: int = 70
    lora_lr: float = 5e-4
    lora_batch_size: int = 4
    lora_augment: str = "once"
    inversion_strength: float = 0.75
    use_sample_prompt: bool = False  # the bench passes prompt=''
    vae: str = "stabilityai/sd-vae-ft-mse"
    lr: float = 0.02
    lam: float = 0.1
    drag_end_step: int = 7
    track_per_step: int = 10
    r1: int = 4
    r2: int = 12
    d: float = 4.0
    max_drag_per_track: int = 3
    max_track_no_change: int = 5
    drag_loss_threshold: float = 0.0  # × (2·r1)²: a track also follows a drag loss at or below it
    point_tracking_border: str = "as_released"
    start_step: int = 0
    start_layer: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.point_tracking_border not in BORDERS:
            raise ValueError(f"gooddrag: point_tracking_border must be one of {sorted(BORDERS)}, "
                             f"got {self.point_tracking_border!r}")


@dataclass
class _State:
    handles: torch.Tensor
    dragging: bool = True
    no_change: int = 0
    tracks: int = 0
    updates: int = 0
    stopped: str = "drag_end_step"


@METHODS.register("gooddrag")
class GoodDrag(DDIMDragMethod):
    name = "gooddrag"
    Config = GoodDragConfig

    def run(self, problem: DragProblem, watch: Stopwatch) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg, unet = self.config, self.models.unet
        timesteps = self.ddim.timesteps[problem.index:]
        state = _State(problem.handles.clone())
        with BlockTap(unet, cfg.feature_block) as tap:
            features_eps = self.features_and_eps(tap, problem)  # graphed while x requires a gradient

            def unet_at(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
                features, eps = features_eps(x, t)
                return features, self.ddim.step(eps, t, x)

            with watch("original_features"), torch.no_grad():
                original_features, original_prev, x = [], [], problem.latent
                for t in timesteps[:cfg.drag_end_step]:
                    features, x = unet_at(x, t)
                    original_features.append(features)
                    original_prev.append(x)

            reference, edited, mutual, since = problem.latent, problem.latent, None, 0
            with contextlib.ExitStack() as hooks:
                for i, t in enumerate(timesteps):
                    if i < cfg.drag_end_step and state.dragging and state.no_change != cfg.max_track_no_change:
                        with watch("drag"):
                            edited = self._drag_at(edited, t, unet_at, original_features[i], original_prev[i],
                                                   problem, state)
                    elif mutual is None:  # dragging is over: MasaCtrl from here on, counting from 0
                        mutual = MutualSelfAttention(cfg.start_step, cfg.start_layer, groups=1)
                        hooks.enter_context(controlled_attention(unet, mutual))
                    if mutual is not None:
                        mutual.step, since = since, since + 1
                    with watch("denoise"), torch.no_grad():
                        pair = torch.cat([reference, edited])
                        pair = self.ddim.step(self.eps(pair, t, problem.text), t, pair)
                        pair = problem.finite.watch(pair, "denoising", i, t)
                        reference, edited = pair[:1], pair[1:]
        return edited, {"drag_updates": state.updates, "tracks": state.tracks, "drag_stopped": state.stopped,
                        **self.points_info(problem, state.handles)}

    def _drag_at(self, latent: torch.Tensor, t: int, unet_at, original_features: torch.Tensor,
                 original_prev: torch.Tensor, problem: DragProblem, state: _State) -> torch.Tensor:
        """`gooddrag_step`: tracking rounds of a few Adam steps on the latent at one timestep."""
        cfg, device = self.config, self.models.device
        border, weight = BORDERS[cfg.point_tracking_border], (2 * cfg.r1) ** 2
        variable = latent.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([variable], lr=cfg.lr)
        scaler = grad_scaler(device)
        track = lambda f: track_points(original_features, f, state.handles, problem.handles, cfg.r2, border)
        first, tracks, since_track = True, 0, 0
        while tracks < cfg.track_per_step:
            with autocast(device):
                features, x_prev = unet_at(variable, t)
                if first:
                    first = False
                    state.handles = track(features)
                if reached(state.handles, problem.targets):
                    state.dragging, state.stopped = False, "reached"
                    break
                if state.no_change == cfg.max_track_no_change:
                    state.dragging, state.stopped = False, "no_change"
                    break
                drag_loss = motion_supervision(features, state.handles, problem.targets, cfg.r1,
                                               reference=(original_features, problem.handles),
                                               step=cfg.d, weight=weight)
                loss = drag_loss + cfg.lam * mask_regulariser(x_prev.float(), original_prev, problem.editable)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state.updates += 1
            since_track += 1
            if since_track == cfg.max_drag_per_track or float(drag_loss.detach()) <= cfg.drag_loss_threshold * weight:
                tracks, since_track = tracks + 1, 0
                state.tracks += 1
                before = state.handles
                state.handles = track(features.detach())  # the features before this update, as released
                state.no_change = state.no_change + 1 if torch.equal(state.handles, before) else 0
        return variable.detach()
