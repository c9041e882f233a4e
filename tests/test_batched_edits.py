"""Editing equal-size samples in batches: how the edit stage forms them, what it records, how it falls back
when a batch fails, and RegionDrag's batched edit against its one-at-a-time edit."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from harness.method import EditMethod
from harness.metrics.features import MetricContext
from harness.pipeline import edit_stage, plan_methods, size_batches
from harness.registry import METHODS, METRICS
from harness.store import MethodStore
from harness.types import EditResult
from tests.dataset_fixtures import sized_drag_dataset
from tests.test_regiondrag import make_sample

pytestmark = pytest.mark.usefixtures("one_thread_module")

# sample name → (width, height); "bad" makes the batching test method fail
SIZES = {"a": (32, 24), "b": (32, 24), "c": (32, 24), "d": (32, 24), "bad": (32, 24), "e": (16, 16), "f": (16, 16)}


BATCHES: list[list[str]] = []


@METHODS.register("test_batches_of_three")
class BatchesOfThree(EditMethod):
    name = "test_batches_of_three"
    needs_model = False

    def max_batch(self) -> int:
        return 3

    def edit(self, sample, seed):
        if sample.sample_id.endswith("/bad"):
            raise RuntimeError("bad sample")
        return EditResult(image=sample.image.copy())

    def edit_batch(self, samples, seed):
        BATCHES.append([s.sample_id.rsplit("/", 1)[1] for s in samples])
        return [self.edit(s, seed) for s in samples]


def test_size_batches_cut_runs_of_equal_size():
    sizes = {"a": (1, 1), "b": (1, 1), "c": (1, 1), "d": (2, 2), "x": None, "y": None}
    assert size_batches(list("abcdxy"), sizes, 2) == [["a", "b"], ["c"], ["d"], ["x"], ["y"]]
    assert size_batches(list("abc"), sizes, 1) == [["a"], ["b"], ["c"]]


def test_edit_stage_batches_equal_sizes_records_shares_and_isolates_a_failure(tmp_path: Path):
    BATCHES.clear()
    dataset = sized_drag_dataset(SIZES)
    plans = plan_methods({"test_batches_of_three": {}}, {"name": "tiny", "source": "random", "arch": "tiny"}, dataset)
    summary = edit_stage({"seed": 0}, dataset, tmp_path, plans)[plans[0].key]
    assert summary["edited"] == 6 and summary["failed"] == 1
    # 16×16 first (e, f), then the 32×24 run a, b, bad | c, d; the batch holding "bad" fails and its
    # samples are edited one by one (the one-sample path does not call edit_batch)
    assert BATCHES == [["e", "f"], ["a", "b", "bad"], ["c", "d"]]
    store = MethodStore(tmp_path, dataset.key, plans[0].key)
    records = {sid.rsplit("/", 1)[1]: store.load_record(sid) for sid in dataset.sample_ids()}
    assert records["bad"]["status"] == "failed" and records["bad"]["error"]["message"] == "bad sample"
    assert "batch_size" not in records["a"]["timing"], "edited alone after the batch failed"
    batched = records["c"]["timing"]
    assert batched["batch_size"] == 2 and batched["total_s"] == pytest.approx(batched["batch_total_s"] / 2)
    for name in "abcdef":
        np.testing.assert_array_equal(store.load_image(f"sized/cat/{name}"), dataset.load(f"sized/cat/{name}").image)
    time_metric = METRICS.get("time")(MetricContext({}, device="cpu"))
    value = time_metric.compute(None, None, records["c"])
    assert np.isnan(value.value) and "batch of 2" in value.info["nan"]
    assert time_metric.compute(None, None, records["a"]).value == records["a"]["timing"]["total_s"]


def test_regiondrag_batch_matches_one_at_a_time(tiny_models):
    from methods.regiondrag import RegionDrag

    def method(**cfg):
        m = RegionDrag.build(cfg)
        m.setup(tiny_models)
        return m

    first, second = make_sample(), make_sample(shift=(0, 16))
    second = dataclasses.replace(second, image=np.ascontiguousarray(second.image[::-1]), prompt="other")
    alone = [method().edit(s, 42) for s in (first, second)]
    together = method(batch_size=2).edit_batch([first, second], 42)
    for a, b in zip(alone, together):
        assert a.info == b.info
        diff = np.abs(a.image.astype(int) - b.image.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05, "batching may change rounding, nothing more"
    assert not np.array_equal(together[0].image, together[1].image)
    # a batch of one is the single-sample edit, and batch_size=1 keeps the store key of earlier runs
    np.testing.assert_array_equal(method().edit_batch([first], 42)[0].image, alone[0].image)
    assert "batch_size" not in method().describe()["config"]
    assert method(batch_size=4).describe()["config"]["batch_size"] == 4
    with pytest.raises(ValueError, match="batch_size"):
        RegionDrag.build({"batch_size": 0})
