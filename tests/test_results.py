"""One set of rules for reading scores back (harness/results.py): the score stage and the report collector
agree on freshness, row status and set-level rows (a standalone COCOEE report has its FID column)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.paths import PROJECT_ROOT
from harness.report.__main__ import main as report_main
from harness.report.collect import load_store
from harness.report.spec import load_spec
from harness.report.table import build_table
from harness.results import SCORE_COLUMNS, is_fresh, row_status
from harness.store import MethodStore
from tests.dataset_fixtures import write_cocoee

pytestmark = pytest.mark.usefixtures("one_thread_module")

COCOEE_METRICS = "metrics=[fid@pbe,clip_region@pbe]"


def cocoee_config(tmp_path: Path, out: Path, *overrides: str) -> dict:
    cfg = compose(["dataset=cocoee", "method=[identity,paint_by_example]", "features=smoke", "metric_device=cpu",
                   "model@method.paint_by_example.model=tiny_pbe", "method.paint_by_example.steps=2",
                   "method.paint_by_example.resolution=64", COCOEE_METRICS, "reporting.html=false",
                   "reporting.bootstrap=50", *overrides])
    cfg["dataset"]["root"] = str(write_cocoee(tmp_path / "test_bench", ids=(1773, 3419, 900100376112)))
    cfg["out_dir"] = str(out)
    return cfg


@pytest.fixture(scope="module")
def cocoee_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cocoee")
    out = tmp / "run"
    run(OmegaConf.create(cocoee_config(tmp, out)))
    return out


def test_spec_report_over_a_store_has_the_set_metric_column(cocoee_run, tmp_path, capsys):
    scores = pd.read_csv(cocoee_run / "scores.csv")
    fid = scores[(scores["metric"] == "fid@pbe") & (scores["method"] == "paint_by_example")]["value"].item()
    spec = yaml.safe_load((PROJECT_ROOT / "reports" / "paint_by_example_cocoee.yaml").read_text())
    row = next(r for r in spec["rows"] if r["method"] == "paint_by_example")
    row["params"] = {"steps": 2, "resolution": 64}  # the fixture run's (the spec's row is the published sampling)
    spec_path = tmp_path / "paint_by_example_cocoee.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    table = build_table(load_spec(spec_path), load_store(cocoee_run), resamples=50)
    assert table.cell("Paint-by-Example", "cocoee", "fid@pbe").ours.mean == fid
    assert report_main([str(spec_path), "--store", str(cocoee_run), "--out", str(tmp_path), "--formats", "md"]) == 0
    md = (tmp_path / "paint_by_example_cocoee.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Paint-by-Example"))
    assert f"{fid:.2f}" in row


def test_collector_and_score_stage_give_the_same_rows(cocoee_run):
    """Same rows, same statuses, same dataset label, set rows included (scores.csv is the score stage's)."""
    ours = load_store(cocoee_run).scores.drop(columns=["method_key"])
    theirs = pd.read_csv(cocoee_run / "scores.csv")
    key = ["method", "metric", "sample_id"]
    ours = ours.sort_values(key, na_position="first").reset_index(drop=True)
    theirs = theirs.sort_values(key, na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, theirs[ours.columns], check_dtype=False)


def test_set_values_of_another_member_list_are_stale(cocoee_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(cocoee_run, copy)
    store = next(MethodStore(copy, "cocoee", p.name) for p in (copy / "store" / "cocoee").glob("paint_by_example-*"))
    record = store.load_record("cocoee/all/000000001773")
    store.record_path("cocoee/all/000000001773").unlink()  # one member fewer: the FID was over another set
    collected = load_store(copy)
    rows = collected.scores[(collected.scores["metric"] == "fid@pbe") & (collected.scores["method"] == "paint_by_example")]
    assert rows.empty and collected.stale >= 1
    assert record is not None


def test_row_status_and_freshness_rules():
    assert row_status(None) == "metric_failed" and row_status(float("nan")) == "undefined" and row_status(0.5) == "ok"
    entry = {"value": 1.0, "version": 2, "features": "abc", "output_sha256": "h"}
    assert is_fresh(entry, 2, "abc", "h") and is_fresh(entry, 2, None, "h") and is_fresh(entry, None, "abc", "h")
    assert not is_fresh(entry, 3, "abc", "h") and not is_fresh(entry, 2, "xyz", "h") and not is_fresh(entry, 2, "abc", "g")
    assert not is_fresh(None, 2, "abc", "h")


def test_collector_labels_undefined_values_and_drops_other_feature_settings(tmp_path):
    """A NaN-by-protocol value is `undefined` (not `ok`); a value cached with other feature settings than the
    variant's others is stale, as it is for the score stage."""
    store = MethodStore(tmp_path, "demo", "identity-0123")
    store.write_description({"method": "identity", "config": {}})
    image = np.zeros((8, 8, 3), np.uint8)
    for i, (value, features) in enumerate([(float("nan"), "A"), (0.5, "A"), (0.7, "B")]):
        sample_id = f"demo/c/s{i}"
        record = store.save_ok(sample_id, image, {"sample_id": sample_id, "status": "ok"})
        store.save_scores(sample_id, {"lpips_alex@regiondrag": {
            "value": value, "version": 1, "features": features, "output_sha256": record["output"]["sha256"]}})
    collected = load_store(tmp_path)
    assert list(collected.scores.columns) == SCORE_COLUMNS
    by_sample = collected.scores.set_index("sample_id")
    assert by_sample.loc["demo/c/s0", "status"] == "undefined" and by_sample.loc["demo/c/s1", "status"] == "ok"
    assert "demo/c/s2" not in by_sample.index and collected.stale == 1
    json.dumps(collected.settings)


def test_fid_over_two_shards_equals_the_unsharded_value(cocoee_run, tmp_path):
    """Each shard stores its samples' features (the set metric's mergeable state); the merge run combines the
    parts without embedding any sample again and gives exactly the unsharded value (same features, same
    order, same `np.cov`: no float tolerance)."""
    out = tmp_path / "sharded"
    for index in (0, 1):
        run(OmegaConf.create(cocoee_config(tmp_path, out, f"shard.index={index}", "shard.count=2")))
    store = next((out / "store" / "cocoee").glob("paint_by_example-*"))
    parts = sorted(p.name for p in (store / "_sets").glob("fid@pbe-*.shard-*.npz"))
    assert len(parts) == 2 and not (store / "_sets" / "scores.json").exists()  # no value over one shard
    merged = run(OmegaConf.create(cocoee_config(tmp_path, out, "stages=[score,report]")))
    board = merged["leaderboard"].set_index("method")
    unsharded = pd.read_csv(cocoee_run / "leaderboard.csv").set_index("method")
    for method in ("identity", "paint_by_example"):
        assert board.loc[method, "fid@pbe"] == unsharded.loc[method, "fid@pbe"]
    assert json.loads((store / "_sets" / "scores.json").read_text())["fid@pbe"]["n"] == 3


def test_leaderboards_and_specs_take_direction_and_scale_from_the_metric(cocoee_run, tmp_path):
    md = (cocoee_run / "leaderboard.md").read_text()
    assert "| fid@pbe ↓ | clip_region@pbe ↑ |" in md
    from harness.report.leaderboard import display_board

    board = pd.DataFrame({"dataset": ["d"], "method": ["m"], "md_dift@regiondrag": [0.05]})
    shown = display_board(board, ["md_dift@regiondrag"])
    assert list(shown.columns)[-1] == "md_dift@regiondrag ×100 ↓" and shown.iloc[0, -1] == pytest.approx(5.0)
    from harness.report.spec import parse_spec

    spec = parse_spec({"title": "t", "dataset": "cocoee", "rows": [{"label": "x", "method": None}],
                       "metrics": [{"id": "clip_region@pbe"}, {"id": "md_dift@regiondrag"},
                                   {"id": "fid@pbe", "better": "higher"}]}, tmp_path / "s.yaml")
    assert [(m.better, m.scale) for m in spec.metrics] == [("higher", 1.0), ("lower", 100.0), ("higher", 1.0)]


def test_results_json_has_one_set_cell_per_variant_counting_its_images(cocoee_run):
    """results.json reads set rows through the store reader: one FID cell per variant (not a second one
    from the per-sample path), `n` = the images aggregated, and a stale entry is not published."""
    from harness.report.results import build_results
    from harness.store import iter_method_stores

    cells = build_results(cocoee_run, resamples=50)["cells"]
    keys = [(c["dataset"], c["method_key"], c["metric"]) for c in cells]
    assert len(keys) == len(set(keys))
    scores = pd.read_csv(cocoee_run / "scores.csv")
    fid = scores[scores["metric"] == "fid@pbe"]
    fid_cells = [c for c in cells if c["metric"] == "fid@pbe"]
    assert len(fid_cells) == len(fid) > 0
    assert sorted(c["n"] for c in fid_cells) == sorted(fid["weight"].astype(int))
    assert all(c["ci"] is None and c["aggregation"] == "set" for c in fid_cells)
    store = next(s for s in iter_method_stores(cocoee_run) if "fid@pbe" in s.load_set_scores())
    saved = store.load_set_scores()
    try:  # an entry whose key no longer matches the variant's members is stale: no cell
        store.save_set_scores({**saved, "fid@pbe": {**saved["fid@pbe"], "key": "0" * 64}})
        stale = build_results(cocoee_run, resamples=50)["cells"]
        assert len([c for c in stale if c["metric"] == "fid@pbe"]) == len(fid_cells) - 1
    finally:
        store.save_set_scores(saved)
