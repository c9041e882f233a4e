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


class FiniteWatch:
    """`check_finite` without a host synchronisation per step.

    On a GPU, a per-step check would stall the host after every UNet call (and every CUDA-graph replay);
    here each step only queues a device-side reduction, and `raise_first` synchronises once, at the end,
    naming the first stage and step that went non-finite. On the CPU it checks immediately.
    """

    def __init__(self) -> None:
        self.flags: list[tuple[torch.Tensor, torch.Tensor, str, int | None, int | None]] = []

    def watch(self, x: torch.Tensor, where: str, step: int | None = None, timestep: int | None = None) -> torch.Tensor:
        if x.device.type == "cpu":
            return check_finite(x, where, step, timestep)
        self.flags.append((torch.isfinite(x).all(), x, where, step, timestep))
        return x

    def raise_first(self) -> None:
        if not self.flags:
            return
        ok = torch.stack([f[0] for f in self.flags]).cpu()
        for good, (_, x, where, step, timestep) in zip(ok.tolist(), self.flags):
            if not good:
                check_finite(x, where, step, timestep)
        self.flags.clear()
