"""Non-finite values in a diffusion loop: find them at the step where they appear.

A NaN or Inf in a latent spreads through every later step and the VAE turns it into a black or garbage
image that a metric would happily score. Methods call `check_finite` after each step (one reduction per
step, negligible next to a UNet call), so the failure is recorded with the stage and step that produced it
instead of as a plausible-looking number.
"""
from __future__ import annotations

import torch


class NonFiniteError(FloatingPointError):
    """A tensor holds NaN or Inf. `where` names the stage (e.g. "inversion", "denoising", "vae_decode"),
    `step` the 0-based step index inside it and `timestep` the scheduler timestep, where known."""

    def __init__(self, where: str, step: int | None = None, timestep: int | None = None, detail: str = "") -> None:
        self.where, self.step, self.timestep = where, step, timestep
        at = "" if step is None else f" at step {step}" + ("" if timestep is None else f" (t={timestep})")
        super().__init__(f"non-finite values in {where}{at}{': ' + detail if detail else ''}")


def check_finite(x: torch.Tensor, where: str, step: int | None = None, timestep: int | None = None) -> torch.Tensor:
    """Return `x` unchanged, or raise `NonFiniteError` naming the stage and step if it holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise NonFiniteError(where, step, timestep, f"{n_nan} NaN and {n_inf} Inf of {x.numel()} values")
    return x
