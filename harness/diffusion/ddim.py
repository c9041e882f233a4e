"""Deterministic DDIM (η = 0) inversion and sampling, as DragDiffusion's `DragPipeline` does it.

DragDiffusion, DragNoise, FreeDrag and GoodDrag all build `DDIMScheduler(scaled_linear, 0.00085–0.012,
clip_sample=False, set_alpha_to_one=False, steps_offset=1)` and run 50 steps (t = 981, 961, …, 1), with
guidance 1. Inverting with strength s runs `round(s · steps)` inversion steps and returns the latent at
`timesteps[steps − round(s · steps)]` (0.7 → index 15, t = 681; 0.75 → round(37.5) = 38 → index 12, t = 741).

The arithmetic is written out (instead of calling `scheduler.step`) so that it is differentiable in the
latent (the drag losses back-propagate through one DDIM step) and runs in float32 whatever the UNet dtype.
"""
from __future__ import annotations

from typing import Callable

import torch

from harness.diffusion.numerics import FiniteWatch
from harness.models.architectures import SCHEDULER

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


def transfer(x: torch.Tensor, eps: torch.Tensor, abar_from: torch.Tensor, abar_to: torch.Tensor) -> torch.Tensor:
    """Move x from noise level ᾱ_from to ᾱ_to along the predicted ε (the DDIM η = 0 update, both ways)."""
    x0 = (x - (1 - abar_from) ** 0.5 * eps) / abar_from ** 0.5
    return abar_to ** 0.5 * x0 + (1 - abar_to) ** 0.5 * eps


class DDIM:
    """DDIM on the SD scheduler values with `steps` inference steps."""

    def __init__(self, steps: int = 50, prediction_type: str = "epsilon") -> None:
        from diffusers import DDIMScheduler

        if prediction_type != "epsilon":
            # The released pipelines treat the UNet output as ε; a v-prediction model would need a conversion
            # none of them does.
            raise ValueError(f"DDIM drag pipelines need an ε-prediction model, this one predicts {prediction_type!r}")
        scheduler = DDIMScheduler(**SCHEDULER)
        scheduler.set_timesteps(steps)
        self.steps = steps
        self.timesteps: list[int] = [int(t) for t in scheduler.timesteps]
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32)
        self.final_alpha_cumprod = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32)
        self.stride = scheduler.config.num_train_timesteps // steps

    def abar(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.final_alpha_cumprod

    def inversion_steps(self, strength: float) -> int:
        """Number of inversion steps for a strength (Python's round: 0.75 · 50 = 37.5 → 38)."""
        return round(strength * self.steps)

    def start_index(self, strength: float) -> int:
        """Index into `timesteps` of the latent that inversion with `strength` returns."""
        return self.steps - self.inversion_steps(strength)

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """x_t → x_{t−Δ} (`DDIMScheduler.step` with η = 0 and no clipping)."""
        return transfer(x, eps, self.abar(t), self.abar(t - self.stride))

    def invert_step(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """x_{t−Δ} → x_t, with ε evaluated at (x_{t−Δ}, t) as the released `inv_step` does."""
        return transfer(x, eps, self.abar(min(t - self.stride, 999)), self.abar(t))

    @torch.no_grad()
    def invert(self, eps_fn: EpsFn, x0: torch.Tensor, n_steps: int,
               finite: FiniteWatch | None = None) -> list[torch.Tensor]:
        """The inversion trajectory [x0, x_1, …, x_n] over the `n_steps` smallest timesteps."""
        finite = finite or FiniteWatch()
        trajectory = [x0]
        for i, t in enumerate(list(reversed(self.timesteps))[:n_steps]):
            x = self.invert_step(eps_fn(trajectory[-1], t), t, trajectory[-1])
            trajectory.append(finite.watch(x, "inversion", i, t))
        return trajectory
