"""Same config and seed → byte-identical PNGs and identical scores on the CPU; the record says which
settings make GPU runs deterministic and which were in effect."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.models.provider import no_model_cache

OVERRIDES = ("method=[copy_paste,regiondrag]", "method.regiondrag.steps=4", "+dataset.ids=[shapes/square_right]",
             "metrics=[lpips_alex@dragdiffusion]")


@pytest.fixture
def restore_determinism():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]
    if saved[3] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]


def fresh_run(out: Path, *overrides: str) -> None:
    cfg = compose([*OVERRIDES, *overrides])
    cfg["out_dir"] = str(out)
    with no_model_cache():  # rebuild the models from their seeds, as a new process would
        run(OmegaConf.create(cfg))


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "store").rglob("*.png"))}


def test_two_fresh_runs_are_byte_identical(tmp_path: Path, restore_determinism) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    fresh_run(a)
    fresh_run(b, "deterministic=true")
    assert len(outputs(a)) == 2 and outputs(a) == outputs(b)
    scores_a, scores_b = pd.read_csv(a / "scores.csv"), pd.read_csv(b / "scores.csv")
    assert scores_a["value"].notna().all()
    pd.testing.assert_frame_equal(scores_a, scores_b, check_exact=True)

    off = json.loads((a / "run.json").read_text())["determinism"]
    on = json.loads((b / "run.json").read_text())["determinism"]
    assert off["requested"] is False and on["requested"] is True
    assert on["use_deterministic_algorithms"] and on["cudnn_deterministic"] and not on["cudnn_benchmark"]
    assert on["cublas_workspace_config"] == ":4096:8"
    assert on["cpu_threads"] == torch.get_num_threads()
    record = json.loads(next((b / "store").rglob("square_right.json")).read_text())
    assert record["determinism"]["use_deterministic_algorithms"] is True
