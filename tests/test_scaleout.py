"""Scale-out: deterministic shards, shard-aware run files, one GPU per job, and a sharded run through
submitit's local executor that scores exactly like an unsharded run."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.data.base import Shard, open_dataset
from harness.paths import PROJECT_ROOT
from harness.scaleout import job_slot, pin_gpu, run_file_name

CONFIG = ["method=[identity,copy_paste,regiondrag]", "method.regiondrag.steps=4", "metrics=[lpips_alex@regiondrag,time]",
          "reporting.bootstrap=100", "reporting.gallery=1"]


def test_shards_partition_the_sorted_ids_deterministically():
    ids = sorted(f"d/c/{i:03d}" for i in range(11))
    parts = [Shard(i, 3).select(ids) for i in range(3)]
    assert sorted(sum(parts, [])) == ids and {len(p) for p in parts} == {3, 4}
    demo = [open_dataset({"name": "demo"}, {"index": i, "count": 2}).sample_ids() for i in range(2)]
    assert demo == [["demo/shapes/disc_brush", "demo/shapes/triangle_up"], ["demo/shapes/square_right"]]
    with pytest.raises(ValueError, match="shard.index"):
        Shard(2, 2)


def test_point_fraction_is_part_of_the_dataset_key_but_shards_are_not():
    assert open_dataset({"name": "demo"}).key == "demo"
    assert open_dataset({"name": "demo", "point_fraction": 0.25, "point_seed": 3}).key == "demo@pf0.25-ps3"
    assert open_dataset({"name": "demo"}, {"index": 1, "count": 2}).key == "demo"


def test_run_files_and_job_slots():
    assert run_file_name({"shard": {"index": 0, "count": 1}}) == "run.json"
    assert run_file_name({"shard": {"index": 1, "count": 4}}) == "run.shard-1-of-4.json"
    assert job_slot({"shard": {"index": 3, "count": 4}}) == 3
    assert job_slot({"shard": {"index": 0, "count": 1}}) is None  # a plain run outside a multirun


def test_one_gpu_per_job_from_the_slot(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert pin_gpu(4) == "1"
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert pin_gpu(5) is None  # already one GPU: a reused worker keeps it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pin_gpu(0) is None  # no GPU (submitit's local executor without gpus_per_node)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert pin_gpu(None) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"


def test_sharded_run_through_submitit_local_scores_exactly_like_an_unsharded_run(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    # unsharded reference, in process
    cfg = compose(CONFIG)
    cfg["out_dir"] = str(tmp_path / "single")
    run(OmegaConf.create(cfg))
    # two shards as two submitit jobs (separate processes), edit + score only
    sharded = tmp_path / "sharded"
    proc = subprocess.run([sys.executable, "-m", "harness", "-m", "hydra/launcher=submitit_local",
                           "hydra.launcher.timeout_min=20", "shard.count=2", "shard.index=0,1", "stages=[edit,score]",
                           f"out_dir={sharded}", *CONFIG], capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shard_runs = [json.loads((sharded / f"run.shard-{i}-of-2.json").read_text()) for i in range(2)]
    assert [sorted(r["dataset"]["samples"]) for r in shard_runs] == [
        ["demo/shapes/disc_brush", "demo/shapes/triangle_up"], ["demo/shapes/square_right"]]
    assert not (sharded / "leaderboard.csv").exists()  # shards never write run-level reports
    # the merge run (shard.count=1) sees all samples and reuses every cached score
    cfg = compose([*CONFIG, "stages=[score,report]"])
    cfg["out_dir"] = str(sharded)
    run(OmegaConf.create(cfg))

    def lpips(path):
        df = pd.read_csv(path / "scores.csv")
        return df[df["metric"] == "lpips_alex@regiondrag"].set_index(["method", "sample_id"])["value"].sort_index()

    single, merged = lpips(tmp_path / "single"), lpips(sharded)
    assert len(single) == 9 and single.index.equals(merged.index)
    assert (single.to_numpy() == merged.to_numpy()).all()  # bit-identical (time differs by nature)
    board = pd.read_csv(sharded / "leaderboard.csv")
    assert (board["n"] == 3).all() and (board["failed"] == 0).all()
    # the outputs themselves are identical too
    for png in (tmp_path / "single" / "store").rglob("*.png"):
        assert png.read_bytes() == (sharded / png.relative_to(tmp_path / "single")).read_bytes(), png.name
