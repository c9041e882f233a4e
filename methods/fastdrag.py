"""FastDrag (XuanjiaZ/FastDrag @def3c4e, NeurIPS'24; protocols_2025.md §2), task "continuous drag" as
`drag_bench_evaluation/run_fast_drag.py` calls `utils/ui_utils.py::run_drag`.

1. DDIM inversion (hand-built scheduler: scaled-linear 0.00085→0.012, no clipping, ᾱ_final = ᾱ₀, offset 1) of
   the VAE mean ×0.18215 with the prompt, `steps`=10, strength 0.7: t = 1, 101, …, 601; every up-block
   self-attention K/V is kept per step index (`iter_cur` = 9 − i).
2. One-step latent warpage of z₆₀₁ by the circle-scaled displacement field and BNNI hole filling
   (`harness.diffusion.latent_warp`), on the mask brought to the latent grid as released (nearest to ⌊H/2⌋×⌊W/2⌋,
   then bilinear without antialias to a quarter: soft, "inside" = > 0) with points rounded at ⌊H/2⌋×⌊W/2⌋.
3. DDIM sampling t = 601 … 1 of a batch of 2 identical latents (`batch_of_two`, the output is copy 1), the
   latents recast to float16 after each step (`fp16_recast`), every up-block self-attention K/V **replaced**
   by the inversion's for the same step index (`kv_replace`).
4. Decode, bilinear-resize to H×W, ×255 and truncate.

Switches (defaults = the release): `unet` — `lcm` (the `lcm_unet_dreamshaper_v7` component: LCM-Dreamshaper
UNet run under DDIM without its guidance embedding, Q-6) or `base` (the model's own SD UNet); `kv_replace` —
`every_step` (`AttnProcessor2_0`, the processor that runs on torch 2) or `legacy` (the old `AttnProcessor`,
only at step indices ≥ 5, Q-9). The release seeds once (`seed_everything(42)`) but draws nothing random.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.diffusion.attention import KVBank
from harness.diffusion.latent_warp import bnni, warp_latent
from harness.diffusion.numerics import FiniteWatch
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import DragSample, EditResult

SCALE = 0.18215
UNETS = ("lcm", "base")
KV_MODES = ("every_step", "legacy")
UP_BLOCKS = slice(7, 16)  # transformer blocks of the up path (harness.diffusion.attention.transformer_blocks)


@dataclass
class FastDragConfig:
    steps: int = 10
    inversion_strength: float = 0.7
    unet: str = "lcm"  # lcm (LCM_Dreamshaper_v7 UNet under DDIM, Q-6) | base (the model's SD UNet)
    lcm_unet: str = "lcm_unet_dreamshaper_v7"  # the component `unet: lcm` loads
    kv_replace: str = "every_step"  # every_step (AttnProcessor2_0) | legacy (only step index >= 5, Q-9)
    batch_of_two: bool = True  # sample two identical latents and keep copy 1, as released
    fp16_recast: bool = True  # round the latents to float16 after every sampling step, as released

    def __post_init__(self) -> None:
        if self.unet not in UNETS:
            raise ValueError(f"fastdrag: unet must be one of {UNETS}, got {self.unet!r}")
        if self.kv_replace not in KV_MODES:
            raise ValueError(f"fastdrag: kv_replace must be one of {KV_MODES}, got {self.kv_replace!r}")
        if not 1 <= round(self.inversion_strength * self.steps) <= self.steps:
            raise ValueError(f"fastdrag: round(inversion_strength · steps) must be in 1..steps, got "
                             f"inversion_strength={self.inversion_strength}, steps={self.steps}")


class UpBlockKV(KVBank):
    """The up-block self-attention K/V of each inversion step (slot = the step index `iter_cur`), pasted back
    whole at the sampling step of the same index, repeated over the sampling batch (`key_ref.repeat(2,1,1)`)."""

    def __init__(self, unet, n_slots: int) -> None:
        super().__init__(unet, n_slots)
        self.projections = self.projections[UP_BLOCKS]

    def paste(self):
        def make(key):
            def hook(module, inputs, output):
                saved = self.banks[key].index_select(0, self.slot)[0].to(output.dtype)
                return saved.repeat(output.shape[0] // saved.shape[0], 1, 1)
            return hook
        return self._hooks(make)


def ddim_scheduler():
    """The release's hand-built `DDIMScheduler` (ui_utils.py::run_drag)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def latent_mask(mask: np.ndarray, device: torch.device) -> torch.Tensor:
    """H×W bool → (1, 1, ⌊⌊H/2⌋/4⌋, ⌊⌊W/2⌋/4⌋) soft mask: nearest to the supervision size, then torchvision's
    bilinear resize without antialias (v0.15) to a quarter of it."""
    h, w = mask.shape
    sup = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None].to(device), (int(0.5 * h), int(0.5 * w)),
                        mode="nearest")
    return F.interpolate(sup, (int(sup.shape[-2] / 4), int(sup.shape[-1] / 4)), mode="bilinear", align_corners=False,
                         antialias=False)


def supervision_points(points: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(x, y) pixels → (row, col) rounded on the ⌊H/2⌋×⌊W/2⌋ supervision grid, float32 as the release's."""
    w, h = size
    rows = [[float(y) / h * int(0.5 * h), float(x) / w * int(0.5 * w)] for x, y in points]
    return torch.round(torch.tensor(rows, dtype=torch.float32))


@METHODS.register("fastdrag")
class FastDrag(EditMethod):
    name = "fastdrag"
    Config = FastDragConfig

    def setup(self, models) -> None:
        from harness.models.components import load_component

        self.models = models
        self.unet = load_component(self.config.lcm_unet, models) if self.config.unet == "lcm" else models.unet
        self.scheduler = ddim_scheduler()
        self.scheduler.set_timesteps(self.config.steps)
        self.kv = UpBlockKV(self.unet, self.config.steps)

    def inv_step(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """`DragPipeline.inv_step`: x_t → x_{t+Δ} (the first step's "previous" ᾱ is ᾱ_final = ᾱ₀)."""
        s = self.scheduler
        prev = min(t - s.config.num_train_timesteps // s.num_inference_steps, 999)
        alpha = s.alphas_cumprod[prev] if prev >= 0 else s.final_alpha_cumprod
        alpha_next = s.alphas_cumprod[t]
        x0 = (x - (1 - alpha) ** 0.5 * eps) / alpha ** 0.5
        return alpha_next ** 0.5 * x0 + (1 - alpha_next) ** 0.5 * eps

    def invert(self, latent: torch.Tensor, text: torch.Tensor, n_actual: int, watch: FiniteWatch) -> torch.Tensor:
        for i, t in enumerate(reversed(self.scheduler.timesteps[-n_actual:])):
            self.kv.set_slot(self.config.steps - 1 - i)
            with self.kv.capture():
                eps = self.unet(latent, t, encoder_hidden_states=text).sample
            latent = watch.watch(self.inv_step(eps, int(t), latent), "inversion", i, int(t))
        return latent

    def sample(self, latent: torch.Tensor, text: torch.Tensor, n_actual: int, watch: FiniteWatch) -> list[torch.Tensor]:
        """DDIM sampling from the warped latent; returns the latents after every step."""
        cfg, trajectory = self.config, []
        first = cfg.steps - n_actual
        for i in range(first, cfg.steps):
            t = self.scheduler.timesteps[i]
            self.kv.set_slot(i)
            replace = cfg.kv_replace == "every_step" or i >= 5
            with self.kv.paste() if replace else contextlib.nullcontext():
                eps = self.unet(latent, t, encoder_hidden_states=text).sample
            latent = self.scheduler.step(eps, t, latent, return_dict=False)[0]
            if cfg.fp16_recast:
                latent = latent.to(torch.float16).to(self.models.dtype)
            trajectory.append(watch.watch(latent, "sampling", i - first, int(t)))
        return trajectory

    @torch.no_grad()
    def edit(self, sample: DragSample, seed: int) -> EditResult:
        cfg, m = self.config, self.models
        device, dtype = m.device, m.dtype
        h, w = sample.image.shape[:2]
        n_actual = round(cfg.inversion_strength * cfg.steps)
        image = (torch.from_numpy(np.array(sample.image)).float() / 127.5 - 1).permute(2, 0, 1)[None]
        latent = m.vae.encode(image.to(device, dtype))["latent_dist"].mean * SCALE
        text = m.encode_prompt(sample.prompt)
        mask = latent_mask(sample.mask, device)
        if not (mask > 0).any():
            raise ValueError(f"{sample.sample_id}: fastdrag needs a non-empty mask on the latent grid "
                             f"({mask.shape[-2]}×{mask.shape[-1]}); the release crashes on an empty one")
        watch = FiniteWatch()
        inverted = self.invert(latent, text, n_actual, watch)
        handles = supervision_points(sample.handles, sample.size).to(device)
        targets = supervision_points(sample.targets, sample.size).to(device)
        warped = bnni(warp_latent(inverted, mask, handles / 4, targets / 4))
        copies = 2 if cfg.batch_of_two else 1
        trajectory = self.sample(warped.repeat(copies, 1, 1, 1), text.repeat(copies, 1, 1), n_actual, watch)
        watch.raise_first()
        decoded = m.vae.decode((1 / SCALE) * trajectory[-1])["sample"]
        decoded = (decoded / 2 + 0.5).clamp(0, 1)[copies - 1:copies]
        out = F.interpolate(decoded, (h, w), mode="bilinear").cpu().permute(0, 2, 3, 1).numpy()[0]
        info = {"inversion_timesteps": [int(t) for t in reversed(self.scheduler.timesteps[-n_actual:])],
                "denoising_timesteps": [int(t) for t in self.scheduler.timesteps[-n_actual:]],
                "latent_size": list(latent.shape[-2:]), "unet": cfg.unet, "mask_cells": int((mask > 0).sum())}
        self.last_trajectory = (inverted, warped, trajectory)  # parity tests read the intermediate latents
        return EditResult(image=np.ascontiguousarray((out * 255).astype(np.uint8)), info=info)

