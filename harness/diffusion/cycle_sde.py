"""Cycle-SDE inversion and sampling (from SDE-Drag; used by RegionDrag and SDE-Drag).

The forward pass adds fresh noise to move from level t to t + Δ, evaluates ε at the noisier latent and
solves for the noise w that makes the DDPM (η = 1) reverse step map x_{t+Δ} back exactly to x_t. Replaying
the reverse steps with the cached w reconstructs the input exactly, while edits between steps (copy-paste,
mask blending) are carried forward stochastically.
"""
from __future__ import annotations

from typing import Callable

import torch

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


class CycleSDE:
    """DDPM/DDIM arithmetic on a fixed stride (`num_train_timesteps // steps`).

    `alphas_cumprod` comes from the model's scheduler config (scaled-linear betas for SD). A timestep below
    zero means "clean" (ᾱ = 1); RegionDrag's walk starts at t = 50 and treats the clean latent as x₅₀.
    """

    @classmethod
    def on_dpm_solver_grid(cls, scheduler_config, steps: int) -> tuple["CycleSDE", list[int]]:
        """The sampler and the `steps` timesteps of a DPM-Solver scheduler built from `scheduler_config`:
        RegionDrag and SDE-Drag both take their timestep list from one (protocols.md §3.1, §3.5)."""
        from diffusers import DPMSolverMultistepScheduler

        scheduler = DPMSolverMultistepScheduler.from_config(scheduler_config)
        scheduler.set_timesteps(steps)
        sde = cls(scheduler.alphas_cumprod, steps, scheduler.config.num_train_timesteps)
        return sde, [int(t) for t in scheduler.timesteps]

    def __init__(self, alphas_cumprod: torch.Tensor, steps: int, num_train_timesteps: int = 1000) -> None:
        self.alphas_cumprod = alphas_cumprod.to(torch.float32).cpu()
        self.stride = num_train_timesteps // steps
        self.one = torch.tensor(1.0)

    def _abar(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.one

    def add_noise(self, x: torch.Tensor, t: int, generator: torch.Generator | None) -> torch.Tensor:
        """x_t → x_{t+Δ} with fresh Gaussian noise (the DDPM marginal ratio ᾱ_{t+Δ}/ᾱ_t)."""
        a, a_next = self._abar(t), self._abar(t + self.stride)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (a_next / a) ** 0.5 * x + (1 - a_next / a) ** 0.5 * noise

    def solve_noise(self, x: torch.Tensor, x_next: torch.Tensor, eps_next: torch.Tensor, t: int) -> torch.Tensor:
        """The noise w with which `posterior(eps_next, x_next, t + Δ, w)` returns exactly x."""
        a, a_next = self._abar(t), self._abar(t + self.stride)
        sigma = ((1 - a) / (1 - a_next)) ** 0.5 * (1 - a_next / a) ** 0.5
        x0 = (x_next - (1 - a_next) ** 0.5 * eps_next) / a_next ** 0.5
        direction = (1 - a - sigma ** 2) ** 0.5
        return (x - a ** 0.5 * x0 - direction * eps_next) / sigma

    def forward_step(self, eps_fn: EpsFn, x: torch.Tensor, t: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t → (x_{t+Δ}, w) where w is the noise that maps x_{t+Δ} back to x_t under `reverse_step`."""
        x_next = self.add_noise(x, t, generator)
        return x_next, self.solve_noise(x, x_next, eps_fn(x_next, t + self.stride), t)

    def posterior(self, eps: torch.Tensor, x: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """One DDPM (η = 1) posterior step from t to t − Δ given ε at (x, t) and the noise."""
        t_prev = t - self.stride
        a, a_prev = self._abar(t), (self._abar(t_prev) if t_prev >= 0 else self.one)
        sigma = ((1 - a_prev) / (1 - a)) ** 0.5 * (1 - a / a_prev) ** 0.5
        x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
        return a_prev ** 0.5 * x0 + (1 - a_prev - sigma ** 2) ** 0.5 * eps + sigma * noise

    def reverse_step(self, eps_fn: EpsFn, x: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """One DDPM (η = 1) posterior step from t to t − Δ with the given noise."""
        return self.posterior(eps_fn(x, t), x, t, noise)
