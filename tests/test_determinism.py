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
    kernels = torch.backends.cuda.matmul.allow_tf32, torch.backends.cuda.cudnn_sdp_enabled()
    yield
    torch.backends.cuda.matmul.allow_tf32 = kernels[0]
    torch.backends.cuda.enable_cudnn_sdp(kernels[1])
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


def method_folders(out: Path) -> list[str]:
    return sorted(p.parent.name for p in (out / "store").rglob("method.json"))


def test_kernel_choices_that_change_rounding_get_their_own_store_keys(tmp_path: Path, restore_determinism) -> None:
    """TF32 matmuls and cuDNN attention change rounding on a GPU: a run with either must not reuse outputs or
    scores made without it, and a default run must keep the keys it always had (no re-editing of old stores)."""
    from harness.data.base import open_dataset
    from harness.pipeline import plan_methods

    out = tmp_path / "run"
    fresh_run(out)
    default_folders = method_folders(out)
    cfg = compose(list(OVERRIDES))
    legacy = plan_methods(cfg["method"], cfg["model"], open_dataset(cfg["dataset"]))  # the key formula without kernels
    assert default_folders == sorted(plan.key for plan in legacy)

    fresh_run(out, "tf32_matmul=true")
    assert torch.backends.cuda.matmul.allow_tf32  # applied to the process, as run.json says
    assert json.loads((out / "run.json").read_text())["determinism"]["tf32_matmul"] is True
    tf32_folders = sorted(set(method_folders(out)) - set(default_folders))
    assert len(tf32_folders) == 2
    described = [json.loads(p.read_text()) for p in (out / "store").rglob("method.json")]
    assert sum(d.get("kernels") == {"tf32_matmul": True} for d in described) == 2, described
    scores = [json.loads(p.read_text()) for p in (out / "store").rglob("*.scores.json")]
    assert len({entry["features"] for s in scores for entry in s.values()}) == 2  # one score key per kernel setting

    fresh_run(out, "tf32_matmul=false")  # back to the defaults: everything is reused
    assert method_folders(out) == sorted(default_folders + tf32_folders)


def test_an_ablation_cannot_vary_a_process_wide_kernel_choice() -> None:
    from harness.ablation import plan_points
    from harness.pipeline import ConfigError

    cfg = compose(list(OVERRIDES))
    cfg["ablation"] = {"name": "tf32", "param": "tf32_matmul", "values": [0, 1]}
    with pytest.raises(ConfigError, match="process-wide"):
        plan_points(cfg)
