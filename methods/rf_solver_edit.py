"""RF-Solver-Edit (Wang et al. 2024, wangjiangshan0725/RF-Solver-Edit `FLUX_Image_Edit/src/edit.py`): invert
the image with the source prompt by RF-Solver's second-order step, sample with the target prompt, and share V
of the single-stream blocks 20–37 from the inversion during the first `inject` sampling intervals.

Released defaults (edit.py's argparse): FLUX.1-dev, 25 steps, guidance 5 for sampling and 1 for the
inversion, `inject` 20; its example scripts use guidance 2 and inject 2–5 per image. Its paper prints no
PIE-Bench table; the PIE-Bench RF-Solver row editlab compares with is FireFlow's re-run (reports/flux_pie.yaml).
As released, V is shared for text and image tokens alike, and the first-order V of the inversion step
t_{k+1} → t_k (computed at t_{k+1}) replaces the one of the sampling step t_k → t_{k+1} (both keyed by the
interval's upper time); the midpoint calls coincide in time.
`solver` = euler | midpoint | fireflow swaps the ODE step (FireFlow's other `sampling_strategy` values).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.flow.attention import ValueBank
from harness.flow.editor import FlowEditor
from harness.flow.solvers import SOLVERS, Walk
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample


@dataclass
class ValueSharingConfig:
    steps: int = 25
    guidance: float = 5.0  # FLUX.1-dev's distilled guidance while sampling with the target prompt
    inversion_guidance: float = 1.0
    inject: int = 20  # sampling intervals (from the noise end) that use the inversion's V
    start_layer: int = 20  # first single-stream block that shares V (the release: `info['id'] > 19`)
    end_layer: int = 37
    solver: str = "rf_solver"  # rf_solver | fireflow | midpoint | euler

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"field 'solver' must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if not 0 <= self.inject <= self.steps:
            raise ValueError(f"field 'inject' must be between 0 and steps ({self.steps}), got {self.inject}")
        if not 0 <= self.start_layer <= self.end_layer:
            raise ValueError(f"fields 'start_layer'/'end_layer' must satisfy 0 ≤ start ≤ end, got {self.start_layer}, {self.end_layer}")


@METHODS.register("rf_solver_edit")
class RFSolverEdit(FlowEditor):
    name = "rf_solver_edit"
    Config = ValueSharingConfig

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        c = self.config
        packed = self.encode(sample)
        prompts = (self.text(sample.encode_source_prompt), self.text(sample.encode_target_prompt))
        times = self.schedule(c.steps, packed)
        walks = (Walk(times, c.solver, True, c.inject), Walk(times, c.solver, False, c.inject))
        bank = ValueBank(c.start_layer, c.end_layer, txt_len=prompts[0].embeds.shape[1])
        x, timings = self.invert_and_sample(packed, prompts, walks, bank)
        info = self.base_info(seed, times) | {"solver": c.solver, "shared_values": len(bank.bank)}
        return EditResult(self.decode(x, packed), timings=timings, info=info)
