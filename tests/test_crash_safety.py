"""Crash safety and concurrency of the run store.

- A run killed with SIGKILL at seeded random moments (edit and score stages) leaves nothing a rerun would
  trust by mistake; the rerun edits exactly the missing samples and its scores equal an uninterrupted run's.
  `EDITLAB_CRASH_ROUNDS` / `EDITLAB_CRASH_SEED` make it a soak test.
- Every partial state a crash can leave (stale temporary files, a record without its PNG, a PNG without
  its record, a half-written record or score cache) is recovered from.
- Two processes on the same shard share the samples and never redo or corrupt one; two shards writing
  into one store keep each other's records, and a later unsharded score/report merges them.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.paths import PROJECT_ROOT
from harness.store import MethodStore, iter_method_stores

importlib.import_module("tests.reliability_plugins")  # registers test_slow

SAMPLES = ("demo/shapes/disc_brush", "demo/shapes/square_right", "demo/shapes/triangle_up")
OVERRIDES = ("method=[identity,copy_paste]", "+method.test_slow={delay:0.4}", "metrics=[test_mad]",
             "plugins=[tests.reliability_plugins]")


def config(out: Path, *overrides: str):
    cfg = compose([*OVERRIDES, *overrides])
    cfg["out_dir"] = str(out)
    return OmegaConf.create(cfg)


def scores(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "scores.csv")
    return df.sort_values(["method", "sample_id", "metric"]).reset_index(drop=True)


def trusted(out: Path) -> dict[tuple[str, str], bytes]:
    """(method, sample) → PNG bytes for every record a rerun would trust."""
    found = {}
    for store in iter_method_stores(out):
        for sample_id in SAMPLES:
            if store.trusted_record(sample_id) is not None:
                found[(store.method_key, sample_id)] = store.image_path(sample_id).read_bytes()
    return found


def temp_files(out: Path) -> list[Path]:
    """Temporary files of sample writes left in the store (method.json's, written once per variant, aside)."""
    return [p for p in (out / "store").rglob("*.tmp") if not p.name.startswith(".method.json.")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, int]:
    """An uninterrupted run, in-process, and the torch thread count it ran with (CPU reductions, hence the
    last bits of a torch-computed score, depend on it; the subprocesses get the same)."""
    import torch

    out = tmp_path_factory.mktemp("reference") / "run"
    run(config(out))
    return out, torch.get_num_threads()


def _wait_for(proc: subprocess.Popen, condition, timeout: float = 240) -> bool:
    """Poll until `condition()` holds (True) or the process exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            return True
        time.sleep(0.02)
    raise TimeoutError("the harness subprocess neither reached the kill point nor finished")


def test_sigkill_at_random_moments_then_resume(reference: tuple[Path, int], tmp_path: Path) -> None:
    reference, threads = reference
    out = tmp_path / "run"
    rng = random.Random(int(os.environ.get("EDITLAB_CRASH_SEED", "9")))
    rounds = int(os.environ.get("EDITLAB_CRASH_ROUNDS", "3"))
    expected = trusted(reference)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(PROJECT_ROOT))
    command = [sys.executable, "-m", "harness", f"out_dir={out}", *OVERRIDES]
    # Kill points: a random moment after the round's first new output (in the edit stage, mostly inside
    # test_slow's 0.4 s per sample) or after its first new score cache (in the score stage).
    kill_points = ["*.png", "*.scores.json"]
    killed = 0
    for i in range(rounds):
        pattern = kill_points[i % len(kill_points)]
        start = len(list(out.rglob(pattern)))
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            reached = _wait_for(proc, lambda: len(list(out.rglob(pattern))) > start)
            if reached:
                time.sleep(rng.uniform(0, 0.4))
                proc.send_signal(signal.SIGKILL)
                killed += proc.wait() == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # Invariant after every crash: whatever a rerun would trust is byte-identical to the reference.
        for key, data in trusted(out).items():
            assert data == expected[key], f"round {i}: trusted output {key} differs from the uninterrupted run"
        if (out / "store").exists():
            for store in iter_method_stores(out):
                for sample_id in SAMPLES:
                    record = store.trusted_record(sample_id)
                    for metric_id, entry in store.load_scores(sample_id).items():
                        if record and entry.get("output_sha256") == record["output"]["sha256"] and entry.get("value") is not None:
                            ref = MethodStore(reference, store.dataset, store.method_key).load_scores(sample_id)
                            assert entry["value"] == ref[metric_id]["value"]
    assert killed >= 1, "no round was killed mid-run (the kill points were never reached)"

    done = trusted(out)
    summary = run(config(out))
    edited = sum(info["edited"] for info in summary["edit"].values())
    reused = sum(info["reused"] for info in summary["edit"].values())
    assert (reused, edited) == (len(done), len(expected) - len(done))
    assert trusted(out) == expected
    assert not temp_files(out), "every sample a crash left a temporary file of was redone and cleaned"
    pd.testing.assert_frame_equal(scores(out), scores(reference))


def test_rerun_recovers_from_every_partial_state(reference: tuple[Path, int], tmp_path: Path) -> None:
    reference, _ = reference
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    store = next(s for s in iter_method_stores(out) if s.method_key.startswith("test_slow"))
    disc, square, triangle = SAMPLES
    # Leftovers of writers killed mid-write: temporary files nobody reads.
    (store.image_path(disc).parent / f".{store.image_path(disc).name}.k1l13d.tmp").write_bytes(b"\x89PNG half")
    (store.record_path(square).parent / f".{store.record_path(square).name}.k1l13d.tmp").write_text('{"status": "o')
    # Killed between the PNG and its record (a first run), and a PNG replaced after its record was written.
    store.record_path(disc).unlink()
    store.image_path(square).write_bytes(store.image_path(square).read_bytes()[:50])
    # A record that is not JSON and a score cache that is not JSON (e.g. written by a non-atomic tool).
    store.record_path(triangle).write_text('{"status": "ok", "output": {"sha')
    other = next(s for s in iter_method_stores(out) if s.method_key.startswith("identity"))
    other.scores_path(disc).write_text('{"test_mad": {"value": 0.5, "ver')

    summary = run(config(out))
    info = {v["method"]: v for v in summary["edit"].values()}
    assert (info["test_slow"]["edited"], info["test_slow"]["reused"]) == (3, 0)
    assert (info["identity"]["edited"], info["identity"]["reused"]) == (0, 3)
    assert not temp_files(out), "stale temporary files of re-edited samples are removed"
    assert trusted(out) == trusted(reference)
    pd.testing.assert_frame_equal(scores(out), scores(reference))


def _run_in_child(out: str, overrides: tuple[str, ...], result: str) -> None:
    summary = run(config(Path(out), *overrides))
    Path(result).write_text(json.dumps({v["method"]: v for v in summary["edit"].values()}))


def _run_concurrently(out: Path, tmp_path: Path, *jobs: tuple[str, ...]) -> list[dict]:
    """Run one harness process per job into `out` at the same time; their edit summaries.

    fork: the children start with the harness already imported (no interpreter start-up each); each opens
    its own lock descriptors, so flock treats them as independent processes. They run no torch kernels
    (identity, test_slow, the `time` metric), which forked children must avoid.
    """
    context = multiprocessing.get_context("fork")
    results = [tmp_path / f"job{i}.json" for i in range(len(jobs))]
    procs = [context.Process(target=_run_in_child, args=(str(out), job, str(r))) for job, r in zip(jobs, results)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(240)
    assert [p.exitcode for p in procs] == [0] * len(jobs)
    return [json.loads(r.read_text()) for r in results]


CONCURRENT = ("method=[identity]", "metrics=[time]", "+method.test_slow={delay:0.3}")


def test_two_processes_on_the_same_shard_share_the_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summaries = _run_concurrently(out, tmp_path, CONCURRENT, CONCURRENT)
    for method in ("identity", "test_slow"):
        # each sample edited exactly once; the other process found it done
        assert sum(s[method]["edited"] for s in summaries) == 3, summaries
        assert sum(s[method]["reused"] for s in summaries) == 3, summaries
        assert all(s[method]["failed"] == 0 for s in summaries)
    assert len(trusted(out)) == 6 and not temp_files(out)
    for store in iter_method_stores(out):
        for sample_id in SAMPLES:
            assert store.load_record(sample_id)["sample_id"] == sample_id


def test_concurrent_shards_keep_each_others_records(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summaries = _run_concurrently(out, tmp_path, *[(*CONCURRENT, f"shard.index={i}", "shard.count=2") for i in (0, 1)])
    assert sum(s["test_slow"]["edited"] for s in summaries) == 3 and all(s["test_slow"]["reused"] == 0 for s in summaries)
    assert len(trusted(out)) == 6 and not temp_files(out)
    shard_runs = sorted(p.name for p in out.glob("run*.json"))
    assert shard_runs == ["run.shard-0-of-2.json", "run.shard-1-of-2.json"]
    ids = [set(json.loads((out / name).read_text())["dataset"]["samples"]) for name in shard_runs]
    assert ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == set(SAMPLES)
    # An unsharded score + report merges the shards from the shared store without editing anything.
    summary = run(config(out, *CONCURRENT, "stages=[score,report]"))
    board = summary["leaderboard"].set_index("method")
    assert (board["n"] == 3).all() and (board["failed"] == 0).all()
