"""DragNoise (haofengl/DragNoise @1072731, `drag_bench_evaluation/run_drag_diffusion.py`; protocols.md §3.3).

DragDiffusion's pipeline (LoRA, DDIM inversion to t = 681, `up_blocks[2]` features at half resolution,
motion supervision r_m 1, point tracking r_p 3, mask regulariser), but the optimised variable is the UNet
bottleneck — the mid-block output h — which a forward hook substitutes for the block's output. The
optimised h then replaces the bottleneck at every denoising step with index i < steps − `end_step` (all of
them with the default end_step 0), and there is no MasaCtrl.

Differences from DragDiffusion kept as released: the mask term is applied even when nothing is masked;
point tracking has no border protection (`point_tracking_border=as_released`: a window that starts outside
the map fails the sample, as the released code does; `intended` clips like DragDiffusion). The release
denoises [original, edited] with identical latents and the same h in both branches, so the two branches
are equal; only the edited one is computed here.

Presets (discrepancy register #9), for the fields left unset:

| preset | LoRA steps / lr / batch | λ | lr (on h) | n_pix_step |
|---|---|---|---|---|
| `bench` (default) | 200 / 2e-4 / 1 | 0.2 | 0.02 | 80 |
| `ui` | 60 / 5e-4 / 4 | 0.1 | 0.01 | 60 |

The bench's LoRA call omits the batch size its own trainer requires; 200 steps at 2e-4 are DragDiffusion
v0.1.0's bench settings, whose trainer used batch 1 — hence 1 here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness.diffusion.ddim_drag import DDIMDragConfig, DDIMDragMethod, DragProblem
from harness.diffusion.drag import DragLoop
from harness.diffusion.features import BlockTap
from harness.diffusion.timing import Stopwatch
from harness.registry import METHODS

BORDERS = {"as_released": "none", "intended": "clip"}


@dataclass
class DragNoiseConfig(DDIMDragConfig):
    METHOD: ClassVar[str] = "dragnoise"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "bench": dict(lora_steps=200, lora_lr=2e-4, lora_batch_size=1, lam=0.2, lr=0.02, n_pix_step=80),
        "ui": dict(lora_steps=60, lora_lr=5e-4, lora_batch_size=4, lam=0.1, lr=0.01, n_pix_step=60),
    }

    preset: str = "bench"
    lora_steps: int | None = None
    lora_lr: float | None = None
    lora_batch_size: int | None = None
    lr: float | None = None
    lam: float | None = None
    n_pix_step: int | None = None
    r_m: int = 1
    r_p: int = 3
    end_step: int = 0  # the last `end_step` denoising steps run without the optimised bottleneck
    bottleneck: str = "mid_block"
    point_tracking_border: str = "as_released"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.point_tracking_border not in BORDERS:
            raise ValueError(f"dragnoise: point_tracking_border must be one of {sorted(BORDERS)}, "
                             f"got {self.point_tracking_border!r}")


@METHODS.register("dragnoise")
class DragNoise(DDIMDragMethod):
    name = "dragnoise"
    Config = DragNoiseConfig

    def run(self, problem: DragProblem, watch: Stopwatch) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.config
        loop = DragLoop(n_steps=cfg.n_pix_step, lr=cfg.lr, r_m=cfg.r_m, r_p=cfg.r_p, lam=cfg.lam,
                        border=BORDERS[cfg.point_tracking_border], regularise_empty_mask=True)
        with watch("drag"):
            outcome, _ = self.drag_at_start(problem, loop, bottleneck=cfg.bottleneck)
        replaced = []
        with watch("denoise"), torch.no_grad(), BlockTap(self.models.unet, cfg.bottleneck) as swap:
            x = problem.latent
            for i, t in enumerate(self.ddim.timesteps[problem.index:], start=problem.index):
                swap.replacement = outcome.variable if i < cfg.steps - cfg.end_step else None
                if swap.replacement is not None:
                    replaced.append(t)
                x = problem.finite.watch(self.ddim.step(self.eps(x, t, problem.text), t, x), "denoising", i, t)
        return x, {"drag_updates": outcome.steps, "drag_stopped": outcome.stopped,
                   "motion_losses": outcome.losses, "handle_distances": outcome.distances,
                   "bottleneck_replaced_at": replaced, **self.points_info(problem, outcome.handles)}
