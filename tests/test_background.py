"""Overlapped host work (harness/background.py) and how the edit stage uses it: same results, same order,
errors surfaced, nothing queued is lost, locks held until the files are written."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from harness.background import BackgroundWriter, Prefetcher, iter_prefetched
from harness.store import MethodStore


def test_writer_runs_jobs_in_order_and_flushes_on_exit():
    done = []
    with BackgroundWriter(max_pending=2) as writer:
        for i in range(6):
            writer.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
    assert done == list(range(6))


def test_writer_reraises_a_failed_job_in_the_submitting_thread():
    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(max_pending=1) as writer:
            writer.submit(fail)
            for _ in range(3):
                writer.submit(lambda: None)


def test_writer_finishes_queued_jobs_when_the_main_thread_fails():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(max_pending=4) as writer:
            writer.submit(lambda: (time.sleep(0.05), done.append("written")))
            raise KeyboardInterrupt
    assert done == ["written"]


def test_prefetcher_loads_the_next_key_on_another_thread_and_returns_the_same_values():
    threads = {}

    def load(key):
        threads[key] = threading.current_thread().name
        if key == "bad":
            raise ValueError("broken sample")
        return key * 2

    keys = ["a", "b", "bad", "c"]
    with Prefetcher(load, keys) as prefetcher:
        assert prefetcher.get("a") == "aa"
        time.sleep(0.05)
        assert threads["b"].startswith("harness-prefetch")  # started while "a" was being used
        assert prefetcher.get("b") == "bb"
        with pytest.raises(ValueError, match="broken sample"):  # raised where the value is used
            prefetcher.get("bad")
        assert prefetcher.get("a") == "aa"  # out of order: loaded directly
        assert prefetcher.get("zzz") == "zzzzzz"  # not in the order at all
    assert [k for k, _ in iter_prefetched(str.upper, "xyz")] == list("xyz")
    assert [v for _, v in iter_prefetched(str.upper, "xyz")] == list("XYZ")


def test_sample_lock_stays_held_until_the_writer_releases_it(tmp_path: Path):
    store = MethodStore(tmp_path, "demo", "m-1")
    lock = store.acquire_lock("demo/cat/a")
    assert lock is not None
    # flock is per open file description: a second descriptor (as another process would hold) is refused
    assert store.acquire_lock("demo/cat/a", blocking=False) is None
    with BackgroundWriter() as writer:
        writer.submit(lock.release)
    second = store.acquire_lock("demo/cat/a", blocking=False)
    assert second is not None
    second.release()


def test_edit_stage_writes_every_output_and_groups_samples_by_size(tmp_path: Path):
    from harness.pipeline import edit_order, edit_stage, plan_methods
    from tests.dataset_fixtures import sized_drag_dataset

    sizes = {"a": (64, 48), "b": (32, 32), "c": (64, 48), "d": (32, 32), "e": (48, 64)}
    dataset = sized_drag_dataset(sizes, unreadable=["e"])
    # (32, 32) first, then (64, 48); the unreadable one last
    assert edit_order(dataset, dataset.sample_ids()) == [f"sized/cat/{k}" for k in "bdace"]
    plans = plan_methods({"identity": {}}, {"name": "tiny", "source": "random", "arch": "tiny"}, dataset)
    summary = edit_stage({"seed": 0}, dataset, tmp_path, plans)
    assert summary[plans[0].key]["edited"] == 5
    store = MethodStore(tmp_path, dataset.key, plans[0].key)
    for sample_id in dataset.sample_ids():
        assert store.trusted_record(sample_id) is not None
        np.testing.assert_array_equal(store.load_image(sample_id), dataset.load(sample_id).image)
