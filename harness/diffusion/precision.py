"""Mixed precision as the released drag code uses it: fp16 autocast plus a gradient scaler, on CUDA only.

DragDiffusion and its descendants optimise latents (and fit LoRAs through accelerate) under
`torch.autocast('cuda', float16)` with a `GradScaler`; on the CPU everything runs in float32.
"""
from __future__ import annotations

import torch


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
