"""The rectified-flow ODE walks of the FLUX editing releases, in both directions.

`euler` is plain reflow (x ← x + Δt·v); `rf_solver` is RF-Solver's second-order step (a half-step
midpoint velocity gives the derivative of v: x ← x + Δt·v + ½Δt²·(v_mid − v)/(Δt/2)); `midpoint` is the
explicit midpoint method (x ← x + Δt·v_mid); `fireflow` is the midpoint method that reuses the previous
step's midpoint velocity as this step's first velocity (one transformer call per step after the first).
The arithmetic follows the releases operation by operation (their `denoise*` functions), so that latents
agree to rounding.

Inversion walks the same schedule backwards (t from 0 up to 1). Each step is identified by its **interval**
`k`, counted from the noise end: the inversion step that moves t_{k+1} → t_k and the sampling step that moves
t_k → t_{k+1} share `k`. The releases key their feature banks the same way (by the interval's upper time,
`info['t']`), and inject during the first `inject` sampling intervals, k < inject.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

SOLVERS = ("euler", "rf_solver", "midpoint", "fireflow")


@dataclass
class StepContext:
    """What the model call in progress is: read by attention controllers (harness/flow/attention.py)."""

    interval: int = 0
    second_order: bool = False  # the midpoint call of a two-call step
    inverse: bool = False
    inject: bool = False


@dataclass(frozen=True)
class Walk:
    """`timesteps`: the schedule from 1 to 0 (harness/flow/schedule.py); `inject`: how many intervals from the
    noise end have `StepContext.inject` set."""

    timesteps: list[float]
    solver: str = "euler"
    inverse: bool = False
    inject: int = 0

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")


Velocity = Callable[[torch.Tensor, float, StepContext], torch.Tensor]


def integrate(velocity: Velocity, x: torch.Tensor, walk: Walk, record: list | None = None) -> torch.Tensor:
    """Walk `x` along `walk`; `velocity(x, t, ctx)` is the model call. `record` receives the latent after
    every step (parity checks)."""
    times = walk.timesteps[::-1] if walk.inverse else walk.timesteps
    n = len(times) - 1
    reuse = None
    for i, (t_curr, t_prev) in enumerate(zip(times[:-1], times[1:])):
        k = n - 1 - i if walk.inverse else i
        ctx = StepContext(k, False, walk.inverse, k < walk.inject)
        dt = t_prev - t_curr
        pred = reuse if reuse is not None else velocity(x, t_curr, ctx)
        if walk.solver == "euler":
            x = x + dt * pred
        else:
            x_mid = x + dt / 2 * pred
            ctx = StepContext(k, True, walk.inverse, ctx.inject)
            pred_mid = velocity(x_mid, t_curr + dt / 2, ctx)
            if walk.solver == "rf_solver":
                first_order = (pred_mid - pred) / (dt / 2)
                x = x + dt * pred + 0.5 * dt ** 2 * first_order
            else:
                x = x + dt * pred_mid
            if walk.solver == "fireflow":
                reuse = pred_mid
        if record is not None:
            record.append(x.detach().clone())
    return x
