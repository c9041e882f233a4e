"""FireFlow (Deng et al. 2024, HolmesShuan/FireFlow-Fast-Inversion-of-Rectified-Flow-for-Image-Semantic-Editing
`src/edit.py`): RF-Solver-Edit's V sharing with FireFlow's midpoint step, which reuses the previous step's
midpoint velocity (one transformer call per step after the first).

Defaults: the README's editing command (`--sampling_strategy fireflow --num_steps 8 --inject 1 --guidance 2
--start_layer_index 0 --end_layer_index 37`), not edit.py's argparse defaults (which are RF-Solver-Edit's: rf_solver,
25 steps, inject 20, blocks 20–37, guidance 5). The released default `--reuse_v 1` shares V only; its
`editing_strategy`/`qkv_ratio` switches act only with `--reuse_v 0` and are not reproduced here. As
released, reuse steps make no first-order call, so only the first inversion step and the midpoint calls
store V.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.registry import METHODS
from methods.rf_solver_edit import RFSolverEdit, ValueSharingConfig


@dataclass
class FireFlowConfig(ValueSharingConfig):
    steps: int = 8
    guidance: float = 2.0
    inject: int = 1
    start_layer: int = 0
    end_layer: int = 37
    solver: str = "fireflow"


@METHODS.register("fireflow")
class FireFlow(RFSolverEdit):
    name = "fireflow"
    Config = FireFlowConfig
