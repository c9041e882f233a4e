"""DragLoRA (Sylvie-X/DragLoRA @4276544, `run_dragbench_draglora.py`; protocols_2025.md §3).

DragDiffusion's pipeline with the drag moved from the latent into an online LoRA:

1. RecLoRA: DragDiffusion's LoRA on the image (80 steps, lr 5e-4, batch 4; `harness.diffusion.lora`).
2. DDIM inversion with the RecLoRA UNet to t = 681 (strength 0.7 of 50 steps), guidance 1.
3. A second, trainable LoRA starts from RecLoRA (`harness.diffusion.lora_pair`); the RecLoRA UNet stays
   as the reference `ori_unet`. F0 and x_{t−1} of the inverted latent are computed once, and the 3×3 f0
   patches at the *initial* handles stay fixed.
4. Loop while fewer than `n_pix_step` (80) loss steps were made: UNet features (up_blocks.2 at half the
   image size); from the second iteration on, distance-closer tracking (r_p 3) and the mode logic
   (`online_lora.ModeSwitch`); stop when every handle is within 2 px; unless in the only-ILFA mode, one
   AdamW step (lr 1e-4, wd 1e-2) on drag loss (r_m 1, weight 9) + 0.1·Σ mask term + 25·MSE DDS term
   (λ_dds 50, ε_ori − ε_lora at a random τ); then ILFA (always): DDIM step t→t−20 with the trained
   LoRA, renoised to t, blended into the inverted latent inside the mask.
5. `dup_generation`: from t = 681, the RecLoRA UNet denoises the inverted latent and lends its
   self-attention K/V of blocks ≥ 10 (up-blocks 2–3) to the trained-LoRA UNet denoising the ILFA latent.
6. Decode, bilinear resize to the source size, ×255 truncated.

Release quirks, each a switch whose default is the released behaviour:
- Q-12 `disable_cudnn`: the release's `seed_everything` turns cuDNN off for the whole edit (slower on GPU).
- Q-13 `inversion_draws_noise`: its inversion draws one latent-shaped normal per step (η = 0, unused),
  which moves the random stream the DDS and ILFA noise come from.
- Q-14 `ilfa_empty_mask`: with an empty mask ILFA blends nothing in (`keep`); `whole` edits everywhere.
- Q-15 `max_iterations`: only-ILFA iterations do not count towards `n_pix_step` and nothing caps them
  (0 = no cap, as released).
- Q-16: guidance above 1 crashes the release; guidance is 1 here, not a field.
- Q-17 `tracking`: `distance` (released) or `angle`, the paper's fast variant (30° cone), hard-wired off.

Randomness (DDS τ and noise, ILFA noise) comes from one generator seeded with the run's seed (42 as the
release's `seed_everything(42)`), drawn in the release's order, not from the global stream.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness.diffusion.attention_control import controlled_attention
from harness.diffusion.ddim_drag import DDIMDragConfig, DDIMDragMethod, DragProblem
from harness.diffusion.drag import mask_regulariser, reached
from harness.diffusion.features import BlockTap, resize_features
from harness.diffusion.kv_bank import SelfAttentionBank, blocks_from
from harness.diffusion.lora_pair import LoraPair, lora_pair
from harness.diffusion.online_lora import (TRACK_REGIONS, ModeSwitch, dds_loss, dds_target, drag_loss, fixed_patches,
                                           ilfa, track_closer)
from harness.diffusion.precision import autocast, grad_scaler
from harness.diffusion.timing import Stopwatch
from harness.registry import METHODS
from harness.types import DragSample, EditResult

EMPTY_MASK = ("keep", "whole")


@dataclass
class DragLoRAConfig(DDIMDragConfig):
    METHOD: ClassVar[str] = "draglora"

    lr: float = 1e-4  # AdamW on the drag LoRA (the latent is never optimised)
    n_pix_step: int = 80  # loss steps (`drag_steps`)
    lam_dds: float = 50.0  # DDS weight: 0.5·λ·MSE
    r_m: int = 1
    r_p: int = 3
    start_step: int = 0  # K/V from the RecLoRA branch during generation
    start_layer: int = 10
    tracking: str = "distance"
    disable_cudnn: bool = True
    cuda_graphs: bool = False  # the RecLoRA fit as CUDA graphs: not measured on a GPU for DragLoRA, so opt-in
    inversion_draws_noise: bool = True
    ilfa_empty_mask: str = "keep"
    max_iterations: int = 0  # Q-15 (0: no cap)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tracking not in TRACK_REGIONS:
            raise ValueError(f"draglora: tracking must be one of {TRACK_REGIONS}, got {self.tracking!r}")
        if self.ilfa_empty_mask not in EMPTY_MASK:
            raise ValueError(f"draglora: ilfa_empty_mask must be one of {EMPTY_MASK}, got {self.ilfa_empty_mask!r}")
        if self.n_pix_step < 0 or self.max_iterations < 0:
            raise ValueError("draglora: n_pix_step and max_iterations must be ≥ 0")


@dataclass
class _Loop:
    """The drag loop's moving parts."""

    latent: torch.Tensor
    handles: torch.Tensor
    switch: ModeSwitch
    expected: torch.Tensor | None = None
    step_idx: int = 0
    steps: int = 0
    iterations: int = 0
    stopped: str = "n_pix_step"


@METHODS.register("draglora")
class DragLoRA(DDIMDragMethod):
    name = "draglora"
    Config = DragLoRAConfig
    runtime_fields = ("lora_cache",)
    key_omits_default = ("lora_profile", "cuda_graphs")  # graphs unmeasured here: `true` keys its own folder

    def edit(self, sample: DragSample, seed: int) -> EditResult:
        self._seed = seed
        cudnn = torch.backends.cudnn.flags(enabled=False) if self.config.disable_cudnn else contextlib.nullcontext()
        with cudnn:
            return super().edit(sample, seed)

    def _alpha(self, t: int) -> torch.Tensor:
        """ᾱ_t as the release reads it: a float32 entry of the scheduler's table (ᾱ₀ below 0)."""
        table = self.ddim.alphas_cumprod.float()
        return table[t] if t >= 0 else torch.tensor(self.ddim.final_alpha, dtype=torch.float32)

    def _step(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_{t−Δ}, x̂0) of a DDIM step in float32 scalars, as the release's `step` and diffusers' DDIM
        compute it (`DDIMSchedule.step` uses float64 ones; the difference is rounding, which the drag
        loop's Adam can amplify)."""
        a, a_prev = (self._alpha(s).to(x.device) for s in (t, t - self.ddim.stride))
        x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps, x0

    def _dds_target(self, pair: LoraPair, pred_x0: torch.Tensor, text: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
        """x̂0 − (1−ᾱ_τ)(ε_ori − ε_lora) at a random τ (noise drawn before τ, as released)."""
        device = pred_x0.device
        noise = torch.randn(pred_x0.shape, generator=generator, device=device)
        tau = int(torch.randint(0, 1000, (1,), generator=generator, device=device))
        a = self._alpha(tau).to(device)
        noisy = a ** 0.5 * pred_x0 + (1 - a) ** 0.5 * noise
        pair.reference()
        eps_ori = self.eps(noisy, tau, text)
        pair.trained()
        eps_lora = self.eps(noisy, tau, text)
        return dds_target(pred_x0, eps_ori, eps_lora, a)

    def _loss_step(self, pair: LoraPair, problem: DragProblem, state: _Loop, terms: dict[str, Any]) -> torch.Tensor:
        cfg = self.config
        loss, state.expected = drag_loss(terms["patches"], terms["features"], state.handles, problem.targets, cfg.r_m)
        if terms["use_mask"]:
            loss = loss + cfg.lam * mask_regulariser(terms["x_prev"].float(), terms["x_prev_0"], problem.editable)
        with torch.no_grad():
            target = self._dds_target(pair, terms["pred_x0"], problem.text, terms["generator"])
        return loss + dds_loss(terms["pred_x0"], target, cfg.lam_dds)

    def _drag(self, pair: LoraPair, problem: DragProblem, generator: torch.Generator) -> _Loop:
        cfg, device = self.config, self.models.device
        t, z = self.ddim.timesteps[problem.index], problem.latent
        editable = problem.editable
        if cfg.ilfa_empty_mask == "whole" and not bool(editable.sum()):
            editable = torch.ones_like(editable)
        with BlockTap(self.models.unet, cfg.feature_block) as tap:
            def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                x_prev, x0 = self._step(self.eps(x, t, problem.text), t, x)
                return resize_features(tap.output, problem.grid_hw), x_prev, x0

            with torch.no_grad():
                reference, x_prev_0, _ = forward(z)
            terms = {"patches": fixed_patches(reference, problem.handles, cfg.r_m), "x_prev_0": x_prev_0,
                     "use_mask": bool(problem.editable.sum() != 0), "generator": generator}
            optimizer = torch.optim.AdamW(pair.parameters, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
            scaler = grad_scaler(device)
            state = _Loop(z, problem.handles.clone(), ModeSwitch())
            while state.steps < cfg.n_pix_step:
                if cfg.max_iterations and state.iterations >= cfg.max_iterations:
                    state.stopped = "max_iterations"
                    break
                state.iterations += 1
                with autocast(device):
                    terms["features"], terms["x_prev"], terms["pred_x0"] = forward(state.latent)
                    if state.step_idx:
                        previous = state.handles
                        state.handles, min_d = track_closer(reference, terms["features"], previous, problem.handles,
                                                            problem.targets, cfg.r_p, cfg.tracking)
                        state.handles, state.step_idx = state.switch.update(state.step_idx, min_d, state.handles,
                                                                            previous, state.expected)
                    if reached(state.handles, problem.targets):
                        state.stopped = "reached"
                        break
                    if not state.switch.ada:
                        loss = self._loss_step(pair, problem, state, terms)
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                        state.step_idx += 1
                        state.steps += 1
                with torch.no_grad():
                    x_next, _ = self._step(self.eps(state.latent, t, problem.text), t, state.latent)
                    noise = torch.randn(x_next.shape, generator=generator, device=device)
                    ratio = self._alpha(t) / self._alpha(t - self.ddim.stride)
                    state.latent = ilfa(x_next, noise, ratio.to(device), editable, z)
        return state

    @torch.no_grad()
    def _generate(self, pair: LoraPair, problem: DragProblem, latent: torch.Tensor) -> torch.Tensor:
        """`dup_generation`: the RecLoRA branch denoises the inverted latent and lends its K/V."""
        cfg = self.config
        bank = SelfAttentionBank(blocks_from(self.models.unet, cfg.start_layer), from_step=cfg.start_step)
        x_ref, x = problem.latent, latent
        with controlled_attention(self.models.unet, bank):
            for i, t in enumerate(self.ddim.timesteps[problem.index:]):
                bank.step = i
                bank.set_mode("record")
                pair.reference()
                eps_ref = self.eps(x_ref, t, problem.text)
                bank.set_mode("replace")
                pair.trained()
                eps = self.eps(x, t, problem.text)
                x_ref, x = self._step(eps_ref, t, x_ref)[0], self._step(eps, t, x)[0]
                x = problem.finite.watch(x, "denoising", i, t)
        return x

    def run(self, problem: DragProblem, watch: Stopwatch) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg, device = self.config, self.models.device
        generator = torch.Generator(device).manual_seed(self._seed)
        if cfg.inversion_draws_noise:  # the release's η = 0 inversion still draws its noise
            for _ in range(len(problem.trajectory) - 1):
                torch.randn(problem.latent.shape, generator=generator, device=device)
        with lora_pair(self.models.unet, cfg.lora_rank, cfg.lora_seed) as pair:
            with watch("drag"):
                state = self._drag(pair, problem, generator)
            with watch("denoise"):
                latent = self._generate(pair, problem, state.latent)
        return latent, {"drag_updates": state.steps, "drag_iterations": state.iterations,
                        "drag_stopped": state.stopped, "mode_events": state.switch.events,
                        **self.points_info(problem, state.handles)}
