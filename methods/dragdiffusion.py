"""DragDiffusion (Yujun-Shi/DragDiffusion @ebe659a, `run_drag_diffusion.py`; protocols.md §3.2).

LoRA on the image → DDIM inversion (strength 0.7 of 50 steps: t = 681) → Adam on the inverted latent
(lr 0.01, at most `n_pix_step` updates) with motion supervision (r_m 1) on `up_blocks[2]` features at half
the image resolution, point tracking (r_p 3) and the mask regulariser (λ 0.1, only when something is
masked) → denoising of [original, optimised] with MasaCtrl (start_step 0, start_layer 10) → bilinear
resize to the source size. Points are the sample's sparse handles/targets; the prompt is the sample's.

Presets (discrepancy register #8), for the fields left unset:

| preset | LoRA steps / lr / batch | inversion strength | n_pix_step |
|---|---|---|---|
| `current` (2023-12-08 on, default) | 80 / 5e-4 / 4 | 0.7 | 80 |
| `2023-10-03` | 60 / 5e-4 / 4 | 0.75 | 40 |
| `v0.1.0` (2023-09-03) | 200 / 2e-4 / 1 | 0.75 | 40 |

v0.1.0's trainer took one 512 random crop without resizing, encoded once; the fix four days later
(resize, then a fresh crop every step) is what every preset here uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness.diffusion.ddim_drag import DDIMDragConfig, DDIMDragMethod, DragProblem
from harness.diffusion.drag import DragLoop
from harness.diffusion.timing import Stopwatch
from harness.registry import METHODS


@dataclass
class DragDiffusionConfig(DDIMDragConfig):
    METHOD: ClassVar[str] = "dragdiffusion"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "current": dict(lora_steps=80, lora_lr=5e-4, lora_batch_size=4, inversion_strength=0.7, n_pix_step=80),
        "2023-10-03": dict(lora_steps=60, lora_lr=5e-4, lora_batch_size=4, inversion_strength=0.75, n_pix_step=40),
        "v0.1.0": dict(lora_steps=200, lora_lr=2e-4, lora_batch_size=1, inversion_strength=0.75, n_pix_step=40),
    }

    preset: str = "current"
    lora_steps: int | None = None
    lora_lr: float | None = None
    lora_batch_size: int | None = None
    inversion_strength: float | None = None
    n_pix_step: int | None = None
    r_m: int = 1
    r_p: int = 3
    start_step: int = 0  # MasaCtrl during the final denoising
    start_layer: int = 10


@METHODS.register("dragdiffusion")
class DragDiffusion(DDIMDragMethod):
    name = "dragdiffusion"
    Config = DragDiffusionConfig

    def run(self, problem: DragProblem, watch: Stopwatch) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.config
        loop = DragLoop(n_steps=cfg.n_pix_step, lr=cfg.lr, r_m=cfg.r_m, r_p=cfg.r_p, lam=cfg.lam)
        with watch("drag"):
            outcome, _ = self.drag_at_start(problem, loop)
        with watch("denoise"):
            latent = self.denoise_mutual(problem.latent, outcome.variable, problem.index, problem.text,
                                         cfg.start_step, cfg.start_layer, problem.finite)
        return latent, {"drag_updates": outcome.steps, "drag_stopped": outcome.stopped,
                        "motion_losses": outcome.losses, "handle_distances": outcome.distances,
                        **self.points_info(problem, outcome.handles)}
