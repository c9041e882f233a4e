"""The three stages end to end on the demo: outputs, resume, failing samples, config errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.diffusion.graphs import GraphCaptureError
from harness.method import EditMethod
from harness.pipeline import ConfigError
from harness.registry import METHODS, UnknownNameError
from harness.types import EditResult

FAST_METRICS = "metrics=[lpips_alex@dragdiffusion,md_dift@dragdiffusion,time,peak_mem]"


def register_failing_method(name: str, on: str, error: Exception) -> None:
    """A model-free method that returns the source unchanged, and raises `error` on samples whose id contains `on`."""
    class FailsOn(EditMethod):
        needs_model = False

        def edit(self, sample, seed):
            if on in sample.sample_id:
                raise error
            return EditResult(image=sample.image.copy())

    FailsOn.name = name
    METHODS.register(name)(FailsOn)


register_failing_method("test_fails_on_square", "square", RuntimeError("synthetic failure"))


def config(tmp_path, *overrides):
    cfg = compose([FAST_METRICS, *overrides])
    cfg["out_dir"] = str(tmp_path / "run")
    return OmegaConf.create(cfg)


def test_demo_run_writes_store_scores_leaderboard_and_run_json(tmp_path, capsys):
    summary = run(config(tmp_path))
    out = tmp_path / "run"
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board["method"]) == ["copy_paste", "identity", "regiondrag"]
    assert (board["n"] == 3).all() and (board["failed"] == 0).all()
    assert board.set_index("method").loc["identity", "lpips_alex@dragdiffusion"] == pytest.approx(0.0, abs=1e-7)
    scores = pd.read_csv(out / "scores.csv")
    assert {"dataset", "method", "sample_id", "metric", "value"} <= set(scores.columns)
    assert len(scores) == 3 * 3 * 4
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "finished" and run_json["config"]["seed"] == 42
    assert set(run_json["dataset"]["samples"]) == {"demo/shapes/disc_brush", "demo/shapes/square_right", "demo/shapes/triangle_up"}
    assert any("denoising_timesteps" in v for v in run_json["timesteps_used"].values())
    assert "torch" in run_json["versions"] and "device" in run_json
    md = (out / "leaderboard.md").read_text()
    assert "SMOKE RUN" in md and "random:tiny:seed0" in md
    printed = capsys.readouterr().out
    assert "| dataset | method |" in printed and f"report: {out / 'leaderboard.md'}" in printed
    record = json.loads(next((out / "store" / "demo").glob("regiondrag-*/shapes/square_right.json")).read_text())
    assert record["status"] == "ok" and record["seed"] == 42 and record["timing"]["total_s"] > 0
    assert record["method_config"]["copy_paste_gate"] == "as_released"

    # rerun: nothing is recomputed, every sample is reused
    capsys.readouterr()
    summary = run(config(tmp_path))
    assert all(info["reused"] == 3 and info["edited"] == 0 for info in summary["edit"].values())
    assert "reused 3 of 3 samples" in capsys.readouterr().out


def test_untrusted_records_are_recomputed(tmp_path):
    run(config(tmp_path, "method=[identity]"))
    png = next((tmp_path / "run" / "store" / "demo").glob("identity-*/shapes/disc_brush.png"))
    png.write_bytes(png.read_bytes()[:100])  # truncated output: hash no longer matches
    summary = run(config(tmp_path, "method=[identity]"))
    (info,) = summary["edit"].values()
    assert info["edited"] == 1 and info["reused"] == 2


def test_failing_sample_is_recorded_and_the_run_goes_on(tmp_path):
    summary = run(config(tmp_path, "method=[identity]", "+method.test_fails_on_square={}", "metrics=[time]"))
    infos = {v["method"]: v for v in summary["edit"].values()}
    assert infos["test_fails_on_square"]["failed"] == 1 and infos["test_fails_on_square"]["edited"] == 2
    record = json.loads(next((tmp_path / "run" / "store" / "demo").glob("test_fails_on_square-*/shapes/square_right.json")).read_text())
    assert record["status"] == "failed" and record["error"]["message"] == "synthetic failure"
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv").set_index("method")
    assert board.loc["test_fails_on_square", "failed"] == 1 and board.loc["test_fails_on_square", "n"] == 2
    # a rerun retries only the failed sample
    summary = run(config(tmp_path, "method=[identity]", "+method.test_fails_on_square={}", "metrics=[time]"))
    info = next(v for v in summary["edit"].values() if v["method"] == "test_fails_on_square")
    assert info["reused"] == 2 and info["failed"] == 1
    with pytest.raises(RuntimeError, match="synthetic"):
        run(config(tmp_path / "strict", "method=[identity]", "+method.test_fails_on_square={}", "metrics=[time]", "strict=true"))


register_failing_method("test_capture_fails_on_triangle", "triangle",
                        GraphCaptureError("CUDA graph capture failed: synthetic"))


def test_a_failed_graph_capture_stops_the_edit_stage(tmp_path):
    """After a failed capture the CUDA state cannot be trusted: recorded, then the run stops (not strict)."""
    with pytest.raises(GraphCaptureError):
        run(config(tmp_path, "method=[]", "+method.test_capture_fails_on_triangle={}", "metrics=[time]"))
    store = next((tmp_path / "run" / "store" / "demo").glob("test_capture_fails_on_triangle-*"))
    record = json.loads((store / "shapes" / "triangle_up.json").read_text())
    assert record["status"] == "failed" and record["error"]["type"] == "GraphCaptureError"
    # samples edited before it are kept; those after it were never started
    from harness.data.base import open_dataset
    from harness.pipeline import edit_order

    dataset = open_dataset({"name": "demo"})
    order = [sid.rsplit("/", 1)[1] for sid in edit_order(dataset, dataset.sample_ids())]
    failed_at = order.index("triangle_up")
    assert failed_at < len(order) - 1, "the demo's edit order must leave a sample after the failing one"
    assert [(store / "shapes" / f"{name}.json").exists() for name in order] == \
        [True] * (failed_at + 1) + [False] * (len(order) - failed_at - 1)


def test_scores_are_cached_by_output_hash(tmp_path):
    run(config(tmp_path, "method=[identity]", "metrics=[lpips_alex@dragdiffusion]"))
    scores = next((tmp_path / "run" / "store" / "demo").glob("identity-*/shapes/disc_brush.scores.json"))
    entry = json.loads(scores.read_text())["lpips_alex@dragdiffusion"]
    entry["value"] = 123.0
    scores.write_text(json.dumps({"lpips_alex@dragdiffusion": entry}))
    board = run(config(tmp_path, "method=[identity]", "metrics=[lpips_alex@dragdiffusion]"))["leaderboard"]
    assert board.loc[0, "lpips_alex@dragdiffusion"] == pytest.approx(41.0)  # cached value reused (123/3)


def test_config_errors_suggest_names_before_any_work(tmp_path):
    with pytest.raises(UnknownNameError, match="regiondrag"):
        run(config(tmp_path, "method=[identity]", "+method.regiondrg={}"))
    with pytest.raises(UnknownNameError, match="md_dift@regiondrag"):
        run(config(tmp_path, "metrics=[md_dift@regiondrg]"))
    assert not (tmp_path / "run" / "store").exists()


def test_family_mismatch_is_refused(tmp_path):
    from harness.metrics.base import Metric
    from harness.registry import METRICS

    @METRICS.register("test_prompt_only")
    class PromptOnly(Metric):
        id = "test_prompt_only"
        families = ("prompt",)

    with pytest.raises(ConfigError, match="prompt"):
        run(config(tmp_path, "metrics=[test_prompt_only]"))


def test_python_m_harness_cli(tmp_path):
    """The console entry point: progress, the table and the report path."""
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "harness", f"out_dir={out}", "method=[identity,copy_paste]",
                           "metrics=[lpips_alex@regiondrag,time]"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| demo | identity |" in proc.stdout and f"report: {out}/leaderboard.md" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "harness", f"out_dir={out}", "metrics=[lpips]"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown metric 'lpips'" in bad.stderr


def test_metric_cli_single_pair(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    a = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(np.roll(a, 3, axis=1)).save(tmp_path / "b.png")
    proc = subprocess.run([sys.executable, "-m", "harness.metrics", "compute", "lpips_alex@dragdiffusion",
                           "--source", str(tmp_path / "a.png"), "--edited", str(tmp_path / "b.png"),
                           "features=smoke"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["metric"] == "lpips_alex@dragdiffusion" and result["value"] > 0
    proc = subprocess.run([sys.executable, "-m", "harness.metrics", "compute", "md_dift@dragdiffusion",
                           "--source", str(tmp_path / "a.png"), "--edited", str(tmp_path / "b.png"),
                           "--points", "[[10, 10], [13, 10]]", "features=smoke", "prompt=a photo"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["weight"] == 1.0
