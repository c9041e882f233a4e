"""Deterministic DDIM (η = 0) steps in both directions, and plain DDIM inversion.

Every PIE-Bench editor (Prompt-to-Prompt, MasaCtrl, Plug-and-Play) and every inversion built on DDIM
(null-text, negative-prompt, Direct Inversion) uses the same two formulas, written once here:

- `step`:    x_t → x_{t−Δ}: x0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t, x_{t−Δ} = √ᾱ_{t−Δ}·x0 + √(1−ᾱ_{t−Δ})·ε;
- `inverse`: x_{t−Δ} → x_t with the same ε, evaluated at the *next* timestep t on the current latent
  (the usual DDIM-inversion approximation ε(x_{t−Δ}, t) ≈ ε(x_t, t)).

Δ = 1000 // steps, and a level below 0 means "clean" with ᾱ = the scheduler's `final_alpha_cumprod`
(ᾱ₀ of the training schedule when `set_alpha_to_one=False`, as in all SD 1.x editing code). The timestep
list comes from a diffusers `DDIMScheduler`, so `steps_offset` decides whether the walk is
980, 960, …, 0 (Prompt-to-Prompt/MasaCtrl's own scheduler) or 981, 961, …, 1 (PnP's, built from the
model's scheduler config).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]

# Prompt-to-Prompt / MasaCtrl build their DDIM scheduler from these values (steps_offset left at 0).
P2P_DDIM = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                set_alpha_to_one=False)


class DDIMSchedule:
    """The timesteps and ᾱ table of one DDIM walk with `steps` steps."""

    def __init__(self, scheduler: Any, steps: int) -> None:
        scheduler.set_timesteps(steps)
        self.steps = steps
        self.timesteps: list[int] = [int(t) for t in scheduler.timesteps]  # denoising order, e.g. 980 … 0
        self.stride = scheduler.config.num_train_timesteps // steps
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
        self.final_alpha = float(scheduler.final_alpha_cumprod)

    @classmethod
    def p2p(cls, steps: int) -> "DDIMSchedule":
        """The schedule of the Prompt-to-Prompt/MasaCtrl reference code (timesteps 980, 960, …, 0 for 50)."""
        from diffusers import DDIMScheduler

        return cls(DDIMScheduler(**P2P_DDIM), steps)

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any], steps: int) -> "DDIMSchedule":
        """`DDIMScheduler.from_config(model scheduler config)`, as PnP does (981, 961, …, 1 for SD 1.5)."""
        from diffusers import DDIMScheduler

        return cls(DDIMScheduler.from_config(config), steps)

    def alpha(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """One denoising step x_t → x_{t−Δ}."""
        a, a_prev = self.alpha(t), self.alpha(t - self.stride)
        x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps

    def inverse(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """One inversion step x_{t−Δ} → x_t (ε predicted at timestep t from x_{t−Δ})."""
        a_cur, a_next = self.alpha(t - self.stride), self.alpha(t)
        x0 = (x - (1 - a_cur) ** 0.5 * eps) / a_cur ** 0.5
        return a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps


@torch.no_grad()
def ddim_invert(eps_fn: EpsFn, latent: torch.Tensor, schedule: DDIMSchedule) -> list[torch.Tensor]:
    """z*_0 … z*_T: `latents[k]` is the latent after k inversion steps (`latents[0]` is the input and
    `latents[-1]` the start of denoising). Denoising step i (timestep `schedule.timesteps[i]`) maps
    `latents[steps − i]` towards `latents[steps − i − 1]`."""
    latents = [latent]
    x = latent
    for t in reversed(schedule.timesteps):
        x = schedule.inverse(eps_fn(x, t), t, x)
        latents.append(x)
    return latents
