"""The end-to-end benchmark writes a DragBench-D-layout dataset, runs `python -m harness` on it and records
the wall clock and stage times (--smoke: tiny models on the CPU)."""
from __future__ import annotations

import importlib.util
import json
import pickle

import numpy as np

from harness.paths import PROJECT_ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_end_to_end", PROJECT_ROOT / "benchmarks" / "bench_end_to_end.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_stand_in_dataset_has_dragbench_statistics(tmp_path):
    bench = load_bench()
    heights = bench.dragbench_heights(np.random.default_rng(0))
    assert len(heights) == 205 and len(set(heights)) == 53 and min(heights) >= 288 and max(heights) <= 913
    assert heights.count(512) == 67 and heights.count(768) == 40
    bench.write_dataset(tmp_path, 12, 64, [40, 48])
    metas = [pickle.loads(p.read_bytes()) for p in sorted(tmp_path.rglob("meta_data.pkl"))]
    assert len(metas) == 12 and len({p.parent.parent.name for p in tmp_path.rglob("meta_data.pkl")}) == 10
    for meta in metas:
        assert len(meta["points"]) in bench.POINT_COUNTS and meta["mask"].dtype == np.uint8 and meta["mask"].any()


def test_end_to_end_smoke(tmp_path):
    out = tmp_path / "e2e.json"
    payload = load_bench().main(["--smoke", "--out", str(out), "score_during_edit=true"])
    record = json.loads(out.read_text())
    assert record["scored_during_edit"] == {"scored": 4, "failed": 0}
    assert len(record["outputs_sha256"]) == len(record["scores_sha256"]) == 64
    assert set(record["score_means"]) == {"lpips_alex@dragdiffusion", "lpips_alex@regiondrag"}
    assert record["ok"] == payload["ok"] == 4 and record["failed"] == 0 and record["scored_samples"] == 4
    assert set(record["stage_seconds"]) == {"edit", "score", "report"}
    assert record["wall_s"] > sum(record["stage_seconds"].values())
    assert "dataset=dragbench_d" in record["run_command"] and "torch" in record["versions"]
