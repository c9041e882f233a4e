"""experiment=drag_back (DragLoRA's Drag-Back, harness/drag_back.py): the back leg's samples, both legs stored and
reused, a back leg redone when its forward output changes, and the round-trip table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.data.base import open_dataset
from harness.drag_back import back_dataset, swapped
from harness.pipeline import plan_methods
from harness.store import MethodStore
from harness.types import DragSample

FAST = ["experiment=drag_back", "dataset=demo", "dataset.limit=1", "method=copy_paste", "metrics=[time]",
        "drag_back.metrics=[mse_gt@draglora,if_gt@draglora]", "reporting.bootstrap=50", "reporting.html=false"]


def test_back_sample_swaps_points_and_keeps_the_original_as_ground_truth():
    image, out = np.zeros((8, 10, 3), np.uint8), np.full((8, 10, 3), 7, np.uint8)
    mask = np.zeros((8, 10), bool)
    mask[2:5, 2:6] = True
    s = DragSample("d/c/s", image, "a cat", [[1, 2]], [[3, 4]], mask, dense_handles=[[1, 1], [2, 2]],
                   dense_targets=[[5, 5], [6, 6]], edit_mask=~mask)
    b = swapped(s, out)
    assert np.array_equal(b.image, out) and np.array_equal(b.ground_truth, image)
    assert b.handles.tolist() == [[3, 4]] and b.targets.tolist() == [[1, 2]]
    assert b.dense_handles.tolist() == [[5, 5], [6, 6]] and b.dense_targets.tolist() == [[1, 1], [2, 2]]
    assert np.array_equal(b.mask, mask) and np.array_equal(b.edit_mask, ~mask) and b.prompt == "a cat"


def drag_back(out: Path, *extra: str) -> dict:
    cfg = compose([*FAST, *extra])
    cfg["out_dir"] = str(out)
    return run(OmegaConf.create(cfg))


def test_drag_back_writes_both_legs_reuses_them_and_tabulates(tmp_path: Path):
    out = tmp_path / "db"
    first = drag_back(out)
    assert {k.split("/")[0]: (v["edited"], v["reused"]) for k, v in first["edit"].items()} == {"forward": (1, 0), "back": (1, 0)}
    cfg = compose(FAST)
    dataset = open_dataset(cfg["dataset"])
    (plan,) = plan_methods(cfg["method"], cfg["model"], dataset)
    sample_id = dataset.sample_ids()[0]
    forward = MethodStore(out, "demo", plan.key)
    back = back_dataset(dataset, out, plan)
    back_store = MethodStore(out, back.key, plan.key)
    assert back.key == f"demo@back-{plan.key}" and back_store.trusted_record(sample_id) is not None
    # the back leg started from the forward output, and is scored against the original
    back_sample = back.load(sample_id)
    assert np.array_equal(back_sample.image, forward.load_image(sample_id))
    original = dataset.load(sample_id).image
    assert np.array_equal(back_sample.ground_truth, original)
    trip = back_store.load_image(sample_id).astype(np.float64) / 127.5 - 1
    expected_mse = float(np.mean((trip - (original.astype(np.float64) / 127.5 - 1)) ** 2))
    table = pd.read_csv(out / "drag_back" / "table.csv")
    row = table[(table["leg"] == "back") & (table["metric"] == "mse_gt@draglora")].iloc[0]
    assert row["mean"] == pytest.approx(expected_mse, rel=1e-5) and row["n"] == 1 and row["missing"] == 0
    assert "round trip: mse_gt@draglora ↓" in (out / "drag_back" / "table.md").read_text()
    assert json.loads((out / "run.json").read_text())["drag_back"]["back_keys"] == [back.key]

    again = drag_back(out)
    assert all(v["reused"] == 1 and v["edited"] == 0 for v in again["edit"].values())

    # a changed forward output makes its back leg stale: it is dragged back again
    record = forward.load_record(sample_id)
    forward.save_ok(sample_id, 255 - forward.load_image(sample_id), {k: v for k, v in record.items() if k != "output"})
    third = drag_back(out)
    assert third["edit"][f"back/{plan.key}"]["edited"] == 1 and third["edit"][f"forward/{plan.key}"]["reused"] == 1
