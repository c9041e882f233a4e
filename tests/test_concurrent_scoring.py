"""Scoring during the edit stage (harness/concurrent_scoring.py): when it is on, that it changes no output
and no score, that it marks the edits it overlapped, and that it never races the global random generators."""
from __future__ import annotations

import json
import threading

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from harness import concurrent_scoring, determinism
from harness.cli import run
from harness.config import compose
from harness.metrics.lpips_alex import LpipsAlexDragDiffusion
from harness.registry import METRICS

pytestmark = pytest.mark.usefixtures("one_thread_module")

LPIPS, TIME = METRICS.get("lpips_alex@dragdiffusion"), METRICS.get("time")
STAGES = ["edit", "score", "report"]


def test_auto_scores_during_edit_only_on_a_gpu_and_without_edit_measurements(monkeypatch, caplog):
    wanted = concurrent_scoring.wanted
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not wanted({}, STAGES, [LPIPS])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(concurrent_scoring, "device_memory_gib", lambda device: 24.0)
    assert not wanted({}, STAGES, [LPIPS]), "not enough memory for both working sets"
    monkeypatch.setattr(concurrent_scoring, "device_memory_gib", lambda device: 80.0)
    assert wanted({}, STAGES, [LPIPS])
    assert not wanted({}, STAGES, [LPIPS, TIME]), "time would be measured under contention"
    assert not wanted({"metric_device": "cpu"}, STAGES, [LPIPS])
    assert not wanted({}, ["edit"], [LPIPS]) and not wanted({}, ["score", "report"], [LPIPS])
    assert not wanted({"score_during_edit": False}, STAGES, [LPIPS])
    with caplog.at_level("WARNING"):
        assert wanted({"score_during_edit": True}, STAGES, [LPIPS, TIME])
    assert "['time']" in caplog.text and "NaN" in caplog.text
    with pytest.raises(ValueError, match="'score_during_edit'"):
        wanted({"score_during_edit": "sometimes"}, STAGES, [LPIPS])


def test_seeded_global_rng_is_exclusive_and_restores_the_generator():
    before = torch.random.get_rng_state()
    seen = []
    with determinism.seeded_global_rng(3):
        first = torch.rand(2)
        probe = threading.Thread(target=lambda: seen.append(determinism.GLOBAL_RNG_LOCK.acquire(blocking=False)))
        probe.start()
        probe.join()
    assert seen == [False], "another thread could seed the generators meanwhile"
    assert torch.equal(torch.random.get_rng_state(), before)
    with determinism.seeded_global_rng(3):
        assert torch.equal(torch.rand(2), first)


def _blocked_by_the_lock(work) -> bool:
    """Whether `work()` on another thread waits while this thread holds GLOBAL_RNG_LOCK."""
    thread = threading.Thread(target=work)
    with determinism.GLOBAL_RNG_LOCK:
        thread.start()
        thread.join(timeout=0.5)
        blocked = thread.is_alive()
    thread.join()
    return blocked


def test_random_weight_builds_wait_for_the_global_generator(tmp_path):
    from harness.metrics.features import MetricContext
    from harness.models.provider import build_random_pipeline

    assert _blocked_by_the_lock(lambda: build_random_pipeline("tiny", seed=0))
    context = MetricContext({"lpips_backbone": "random"}, device="cpu")
    assert _blocked_by_the_lock(lambda: context.lpips_alex(torch.float32))
    assert _blocked_by_the_lock(lambda: context.shared("net", lambda: torch.nn.Linear(2, 2)))


def test_edits_hold_the_global_generator(tmp_path):
    """While an edit runs, no other thread can seed or draw from the global generators through the lock."""
    from harness.method import EditMethod
    from harness.pipeline import edit_stage, plan_methods
    from harness.registry import METHODS
    from harness.types import EditResult

    free_during_edit = []

    @METHODS.register("test_probes_rng_lock")
    class ProbesLock(EditMethod):
        name = "test_probes_rng_lock"
        needs_model = False

        def edit(self, sample, seed):
            probe = threading.Thread(target=lambda: free_during_edit.append(
                determinism.GLOBAL_RNG_LOCK.acquire(blocking=False)))
            probe.start()
            probe.join()
            return EditResult(image=sample.image.copy())

    from harness.data.base import open_dataset

    dataset = open_dataset({"name": "demo"})
    plans = plan_methods({"test_probes_rng_lock": {}}, {"name": "tiny", "source": "random", "arch": "tiny"}, dataset)
    edit_stage({"seed": 0}, dataset, tmp_path, plans)
    assert free_during_edit and not any(free_during_edit)


def _config(out_dir, *overrides):
    # identity first: the scorer then builds its random DIFT model while the main thread builds RegionDrag's
    cfg = compose(["method=[identity,regiondrag]", "metrics=[lpips_alex@dragdiffusion,md_dift@dragdiffusion,time]",
                   "reporting.html=false", "reporting.bootstrap=10", *overrides])
    cfg["out_dir"] = str(out_dir)
    return OmegaConf.create(cfg)


def _records(out_dir):
    return {p.name: json.loads(p.read_text()) for p in (out_dir / "store").rglob("*.json")
            if not p.name.endswith(".scores.json") and p.name != "method.json"}


def test_scoring_during_edit_gives_the_same_outputs_and_scores(tmp_path):
    alone, during = tmp_path / "alone", tmp_path / "during"
    run(_config(alone, "score_during_edit=false"))
    summary = run(_config(during, "score_during_edit=true"))
    run_json = json.loads((during / "run.json").read_text())
    assert run_json["scored_during_edit"] == {"scored": 6, "failed": 0}  # 3 demo samples × 2 methods
    assert summary["edit"] and all(info["edited"] == 3 for info in summary["edit"].values())

    a, b = _records(alone), _records(during)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name]["output"]["sha256"] == b[name]["output"]["sha256"], name  # RegionDrag's PNGs identical
        assert a[name]["timing"]["concurrent_scoring"] is False and b[name]["timing"]["concurrent_scoring"] is True

    def scores(out_dir):
        return pd.read_csv(out_dir / "scores.csv").sort_values(["method", "sample_id", "metric"], ignore_index=True)

    sa, sb = scores(alone), scores(during)
    image = ~sa.metric.eq("time")
    pd.testing.assert_frame_equal(sa[image], sb[image])
    assert (sa[~image].status == "ok").all()
    assert (sb[~image].status == "undefined").all() and sb[~image].value.isna().all(), \
        "an edit timed beside the scorer must not report a time"


def test_a_scorer_failure_is_retried_by_the_score_stage_or_stops_a_strict_run(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = LpipsAlexDragDiffusion.compute

    def fails_first_time(self, *args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient metric failure")
        return original(self, *args)

    monkeypatch.setattr(LpipsAlexDragDiffusion, "compute", fails_first_time)
    overrides = ("method=[identity]", "metrics=[lpips_alex@dragdiffusion]", "score_during_edit=true")
    cfg = compose([*overrides, "reporting.html=false", "reporting.bootstrap=10"])
    cfg["out_dir"] = str(tmp_path / "lenient")
    run(OmegaConf.create(cfg))
    rows = pd.read_csv(tmp_path / "lenient" / "scores.csv")
    # not cached as failed (it may have been the concurrency's fault): the score stage computed it again
    assert list(rows.status) == ["ok", "ok", "ok"] and calls["n"] == 4

    calls["n"] = 0
    cfg = compose([*overrides, "strict=true"])
    cfg["out_dir"] = str(tmp_path / "strict")
    with pytest.raises(RuntimeError, match="transient metric failure"):
        run(OmegaConf.create(cfg))


def test_each_stream_role_gets_its_own_pool_stream(monkeypatch):
    """PyTorch hands out pool streams round-robin; a role must never receive a stream another role holds."""
    from harness import streams

    class PoolStream:
        handed_out = 0

        def __init__(self, device=None, priority=0):
            self.stream_id = PoolStream.handed_out % 2  # a pool of two streams
            PoolStream.handed_out += 1

    monkeypatch.setattr(streams, "_STREAMS", {})
    monkeypatch.setattr(torch.cuda, "Stream", PoolStream)
    capture = streams.role_stream("graph_capture", "cuda:0")
    scorer = streams.role_stream("scorer", "cuda:0")
    assert capture.stream_id != scorer.stream_id
    for _ in range(5):  # many captures later: still the one capture stream, never the scorer's
        assert streams.role_stream("graph_capture", "cuda:0") is capture
    with pytest.raises(RuntimeError, match="no CUDA stream left"):
        streams.role_stream("edit", "cuda:0")
