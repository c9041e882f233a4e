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
Generators = torch.Generator | list[torch.Generator] | None  # one for the batch, or one per sample


class CycleSDE:
    """DDPM/DDIM arithmetic on a fixed stride Δ = `num_train_timesteps // steps`.

    `alphas_cumprod` comes from the model's scheduler config (scaled-linear betas for SD). A timestep below
    zero means "clean" (ᾱ = 1); RegionDrag's walk starts at t = 50 and treats the clean latent as x₅₀.

    A forward step goes from t to `up(t)` = t + Δ, capped at the last trained timestep T − 1. The cap
    matters only where the DPM-Solver grid and the stride disagree at the top: the grid is
    round(999·k/steps) (spacing 999/steps) while Δ = ⌊1000/steps⌋, and on the 2-step grid [999, 500] the
    step from 500 would reach 1000, past ᾱ's table (the reference indexes out of bounds there). Capped, it
    ends at 999, the timestep the denoising starts from. Every other grid stays below T − 1, so the cap
    never changes them.
    """

    @classmethod
    def on_dpm_solver_grid(cls, scheduler_config, steps: int) -> tuple["CycleSDE", list[int]]:
        """The sampler and the `steps` timesteps of a DPM-Solver scheduler built from `scheduler_config`:
        RegionDrag and SDE-Drag both take their timestep list from one (protocols.md §3.1, §3.5)."""
        from diffusers import DPMSolverMultistepScheduler

        scheduler = DPMSolverMultistepScheduler.from_config(scheduler_config)
        scheduler.set_timesteps(steps)
        timesteps = [int(t) for t in scheduler.timesteps]
        if len(timesteps) != steps:  # both methods index the list by `steps`
            raise ValueError(f"the DPM-Solver grid for steps={steps} has {len(timesteps)} timesteps "
                             f"(timestep_spacing={scheduler.config.timestep_spacing!r}); choose another step count")
        return cls(scheduler.alphas_cumprod, steps, scheduler.config.num_train_timesteps), timesteps

    def __init__(self, alphas_cumprod: torch.Tensor, steps: int, num_train_timesteps: int = 1000) -> None:
        self.alphas_cumprod = alphas_cumprod.to(torch.float32).cpu()
        self.stride = num_train_timesteps // steps
        self.top = len(self.alphas_cumprod) - 1
        self.one = torch.tensor(1.0)

    def _abar(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.one

    def up(self, t: int) -> int:
        """The level one forward step above t: t + Δ, capped at the last trained timestep."""
        if t >= self.top:
            raise ValueError(f"CycleSDE: no forward step above t={t}, the top of the {self.top + 1}-step schedule")
        return min(t + self.stride, self.top)

    def add_noise(self, x: torch.Tensor, t: int, generator: Generators) -> torch.Tensor:
        """x_t → x_{up(t)} with fresh Gaussian noise (the DDPM marginal ratio ᾱ_{up(t)}/ᾱ_t). With a list of
        generators, row i of the batch draws from generator i: each sample gets the noise it would alone."""
        a, a_next = self._abar(t), self._abar(self.up(t))
        if isinstance(generator, (list, tuple)):
            if len(generator) != len(x):
                raise ValueError(f"CycleSDE: {len(generator)} generators for a batch of {len(x)}")
            noise = torch.cat([torch.randn((1, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype)
                               for g in generator])
        else:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (a_next / a) ** 0.5 * x + (1 - a_next / a) ** 0.5 * noise

    def solve_noise(self, x: torch.Tensor, x_next: torch.Tensor, eps_next: torch.Tensor, t: int) -> torch.Tensor:
        """The noise w with which `posterior(eps_next, x_next, up(t), w)` returns exactly x (when up(t) = t + Δ)."""
        a, a_next = self._abar(t), self._abar(self.up(t))
        sigma = ((1 - a) / (1 - a_next)) ** 0.5 * (1 - a_next / a) ** 0.5
        x0 = (x_next - (1 - a_next) ** 0.5 * eps_next) / a_next ** 0.5
        direction = (1 - a - sigma ** 2) ** 0.5
        return (x - a ** 0.5 * x0 - direction * eps_next) / sigma

    def forward_step(self, eps_fn: EpsFn, x: torch.Tensor, t: int, generator: Generators) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t → (x_{up(t)}, w) where w is the noise that maps x_{up(t)} back to x_t under `reverse_step`."""
        x_next = self.add_noise(x, t, generator)
        return x_next, self.solve_noise(x, x_next, eps_fn(x_next, self.up(t)), t)

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
