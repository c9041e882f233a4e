"""FLUX's time schedule: `t` from 1 (noise) to 0 (image) in `steps` equal steps, shifted towards the noise end
by μ, which grows linearly with the number of image tokens (black-forest-labs/flux `get_schedule`, which
RF-Solver-Edit, FireFlow and KV-Edit copy; diffusers' `FlowMatchEulerDiscreteScheduler` with dynamic
shifting computes the same values in float64, FlowEdit uses that one).

The shift maps t ↦ e^μ / (e^μ + 1/t − 1); μ = 0.5 at 256 tokens (256² images) and 1.15 at 4096 (1024²).
"""
from __future__ import annotations

import math

import torch


def shift_mu(image_seq_len: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """μ on the line through (256, base_shift) and (4096, max_shift), as `get_lin_function` computes it."""
    m = (max_shift - base_shift) / (4096 - 256)
    return m * image_seq_len + (base_shift - m * 256)


def flux_timesteps(steps: int, image_seq_len: int, shift: bool = True) -> list[float]:
    """`steps + 1` times from 1 to 0 (float32 values, as the reference computes them on a float32 tensor)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    t = torch.linspace(1, 0, steps + 1)
    if shift:
        mu = shift_mu(image_seq_len)
        t = math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)
    return t.tolist()
