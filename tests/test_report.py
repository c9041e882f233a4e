"""Report specs rendered from an existing store: matching, missing cells, published values, formats, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.paths import PROJECT_ROOT
from harness.report.collect import load_any, load_store
from harness.report.render import to_csv, to_frame, to_html, to_latex, to_markdown, write_all
from harness.report.spec import SpecError, load_spec, parse_spec
from harness.report.table import AmbiguousRowError, build_table
from harness.store import MethodStore

METRICS = ["lpips_alex@regiondrag", "time"]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """copy_paste with radius 4, then identity and copy_paste (default radius 8) on the demo: no diffusion
    model needed; the run files describe the second run."""
    out = tmp_path_factory.mktemp("report") / "run"
    for overrides in (["method=[copy_paste]", "method.copy_paste.radius=4"], ["method=[identity,copy_paste]"]):
        cfg = compose([*overrides, f"metrics=[{','.join(METRICS)}]", "reporting.bootstrap=200"])
        cfg["out_dir"] = str(out)
        run(OmegaConf.create(cfg))
    return out


def write_spec(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


SPEC = {
    "title": "Demo table",
    "description": "test spec",
    "dataset": "demo",
    "metrics": [{"id": "lpips_alex@regiondrag", "label": "LPIPS", "scale": 100, "better": "lower", "decimals": 2},
                {"id": "time", "label": "Time", "better": "lower", "decimals": 4}],
    "rows": [
        {"label": "Identity", "method": "identity", "published": {"lpips_alex@regiondrag": 0.0}},
        {"label": "Copy-paste", "method": "copy_paste",
         "published": {"lpips_alex@regiondrag": {"value": 6.4, "unverified": True, "note": "third-party"}}},
        {"label": "Copy-paste r4", "method": "copy_paste", "params": {"radius": 4}},
        {"label": "Copy-paste r2", "method": "copy_paste", "params": {"radius": 2}},
        {"label": "DragDiffusion", "method": "dragdiffusion", "published": {"time": None}},
        {"label": "DragGAN", "method": None, "published": {"lpips_alex@regiondrag": 31.5}, "source": "a paper"},
    ],
    "comparisons": [{"a": "Copy-paste", "b": "Identity"}],
    "notes": ["a spec note"],
}


def test_spec_table_matches_variants_and_leaves_missing_cells_empty(store_dir, tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC))
    table = build_table(spec, load_store(store_dir), resamples=200)
    board = pd.read_csv(store_dir / "leaderboard.csv")
    cp8 = table.variants[("Copy-paste", "demo")]
    cp4 = table.variants[("Copy-paste r4", "demo")]
    assert cp8.config["radius"] == 8 and cp4.config["radius"] == 4 and cp8.key != cp4.key
    assert table.variants[("Copy-paste r2", "demo")] is None  # never run
    assert table.variants[("DragDiffusion", "demo")] is None  # not even implemented in this checkout
    # ours = the per-sample mean on the display scale, same as the leaderboard
    lpips_cp8 = table.cell("Copy-paste", "demo", "lpips_alex@regiondrag").ours
    assert lpips_cp8.mean == pytest.approx(100 * board.set_index("method").loc["copy_paste", "lpips_alex@regiondrag"])
    assert lpips_cp8.n == 3
    assert table.cell("Identity", "demo", "lpips_alex@regiondrag").ours.mean == pytest.approx(0.0, abs=1e-6)
    assert ("Identity", "demo", "lpips_alex@regiondrag") in table.best
    assert table.cell("DragGAN", "demo", "lpips_alex@regiondrag").published.value == 31.5
    assert any("No run in the store for: Copy-paste r2, DragDiffusion" in n for n in table.notes)
    assert any(n.startswith("SMOKE RUN") for n in table.notes)  # random LPIPS backbone
    (comparison,) = [c for c in table.comparisons if c["metric"] == "lpips_alex@regiondrag"]
    assert comparison["n"] == 3 and comparison["diff"] == pytest.approx(lpips_cp8.mean)


def test_all_four_formats(store_dir, tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC))
    table = build_table(spec, load_store(store_dir), resamples=200)
    md = to_markdown(table)
    assert "| Copy-paste r2 | — | — | — | — | — | — |" in md
    assert "6.4†" in md and "| DragGAN | — | 31.5 |" in md and "**0.00" in md
    assert "third-party" in md and "a spec note" in md and "Paired comparisons" in md
    tex = to_latex(table)
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"6.4$^\dagger$" in tex
    assert r"LPIPS$\times$100$\downarrow$" in tex and "Copy-paste r2 & -- & -- & -- & --" in tex
    frame = pd.read_csv(pd.io.common.StringIO(to_csv(table)))
    assert len(frame) == len(SPEC["rows"]) * 2
    cp = frame[(frame["row"] == "Copy-paste") & (frame["metric"] == "lpips_alex@regiondrag")].iloc[0]
    assert cp["published"] == 6.4 and bool(cp["published_unverified"]) and cp["n"] == 3
    assert np.isnan(frame[frame["row"] == "Copy-paste r2"]["ours_mean"]).all()
    page = to_html(table)
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "http" not in page.split("<body>")[0]
    written = write_all(table, tmp_path / "out")
    assert sorted(p.suffix for p in written.values()) == [".csv", ".html", ".md", ".tex"]
    assert to_frame(table).equals(to_frame(table))


def test_repository_specs_parse_and_render_with_missing_methods(store_dir):
    specs = sorted((PROJECT_ROOT / "reports").glob("*.yaml"))
    assert {"regiondrag_table1.yaml", "dragbench_md_if.yaml"} <= {p.name for p in specs}
    store = load_store(store_dir)
    for path in specs:
        table = build_table(load_spec(path), store, resamples=100)
        for render in (to_markdown, to_latex, to_csv, to_html):
            assert render(table)
    t1 = build_table(load_spec(PROJECT_ROOT / "reports" / "regiondrag_table1.yaml"), store, resamples=100)
    md_sr = t1.cell("RegionDrag", "dragbench_sr", "md_dift@regiondrag").published
    assert md_sr.value == 6.4 and md_sr.unverified
    assert t1.cell("DragDiffusion", "dragbench_dr", "lpips_alex@regiondrag").published.value is None
    md_if = build_table(load_spec(PROJECT_ROOT / "reports" / "dragbench_md_if.yaml"), store, resamples=100)
    assert md_if.cell("DragNoise", "dragbench_d", "md_dift@dragdiffusion").published.value == 33.4
    assert md_if.cell("DragNoise", "dragbench_d", "if@dragdiffusion").published.value == 0.89


def test_ambiguous_rows_are_an_error_naming_the_variants(tmp_path):
    for radius in (3, 5):  # a method unknown to this checkout, with two variants in the store
        store = MethodStore(tmp_path, "demo", f"newdrag-{radius}")
        store.write_description({"method": "newdrag", "config": {"radius": radius}})
    store_scores = load_store(tmp_path)
    spec = parse_spec({"title": "t", "dataset": "demo", "metrics": [{"id": "time"}],
                       "rows": [{"label": "New", "method": "newdrag"}]}, tmp_path / "s.yaml")
    with pytest.raises(AmbiguousRowError, match="newdrag-3.*newdrag-5"):
        build_table(spec, store_scores)
    spec.rows[0].params = {"radius": 5}
    assert build_table(spec, store_scores).variants[("New", "demo")].key == "newdrag-5"


def test_stale_cached_scores_are_left_out(store_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store_dir / "store", copy / "store")
    scores = next((copy / "store" / "demo").glob("identity-*/shapes/disc_brush.scores.json"))
    cache = json.loads(scores.read_text())
    cache["time"]["output_sha256"] = "0" * 64
    scores.write_text(json.dumps(cache))
    loaded = load_store(copy)
    assert loaded.stale == 1
    assert len(loaded.scores[(loaded.scores["metric"] == "time") & loaded.scores["method_key"].str.startswith("identity")]) == 2


def test_scores_csv_fallback(store_dir, tmp_path):
    loaded = load_any(store_dir / "scores.csv")
    assert {v.method for v in loaded.variants} >= {"identity"}
    spec = parse_spec({"title": "t", "dataset": "demo", "metrics": [{"id": "time"}],
                       "rows": [{"label": "Identity", "method": "identity"}]}, tmp_path / "s.yaml")
    assert build_table(spec, loaded).cell("Identity", "demo", "time").ours.n == 3


@pytest.mark.parametrize("broken, message", [
    ({"dataset": "demo", "metrics": [{"id": "time"}], "rows": []}, "missing field 'title'"),
    ({"title": "t", "metrics": [{"id": "time"}], "rows": []}, "exactly one of 'dataset' or 'datasets'"),
    ({"title": "t", "dataset": "demo", "metrics": [{"id": "time", "better": "up"}], "rows": []}, r"metrics\[0\].better"),
    ({"title": "t", "dataset": "demo", "metrics": [{"id": "time"}],
      "rows": [{"label": "a", "method": "identity", "published": {"lpips": 3}}]}, r"rows\[0\].published.*'lpips'"),
    ({"title": "t", "dataset": "demo", "metrics": [{"id": "time"}],
      "rows": [{"label": "a", "method": "identity", "published": {"time": "fast"}}]}, r"rows\[0\].published.demo.time"),
    ({"title": "t", "dataset": "demo", "metrics": [{"id": "time"}], "rows": [{"label": "a"}]}, r"rows\[0\] needs"),
])
def test_spec_errors_name_the_file_and_field(tmp_path, broken, message):
    path = write_spec(tmp_path, broken)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_report_cli(store_dir, tmp_path):
    spec = write_spec(tmp_path, SPEC)
    proc = subprocess.run([sys.executable, "-m", "harness.report", str(spec), "--store", str(store_dir),
                           "--out", str(tmp_path / "cli"), "--resamples", "100"],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr
    for suffix in ("md", "tex", "csv", "html"):
        assert (tmp_path / "cli" / f"spec.{suffix}").is_file() and f"{suffix}: " in proc.stdout
    bad = write_spec(tmp_path, {"title": "t"})
    proc = subprocess.run([sys.executable, "-m", "harness.report", str(bad), "--store", str(store_dir)],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 2 and str(bad) in proc.stderr


def test_run_leaderboard_gains_intervals_without_changing_its_columns(store_dir):
    board = pd.read_csv(store_dir / "leaderboard.csv")
    assert list(board.columns) == ["dataset", "method", *METRICS, "n", "failed", "nan"]
    ci = pd.read_csv(store_dir / "leaderboard_ci.csv")
    assert list(ci.columns) == ["dataset", "method", "metric", "mean", "ci_low", "ci_high", "n", "failed"]
    merged = ci[ci["metric"] == "time"].merge(board, on=["dataset", "method"])
    assert np.allclose(merged["mean"], merged["time"])
    md = (store_dir / "leaderboard.md").read_text()
    assert "## 95% bootstrap intervals" in md
    assert (store_dir / "report.html").is_file()


def test_gallery_draws_the_drag_and_handles_other_families():
    from harness.data.base import open_dataset
    from harness.report.gallery import HANDLE, TARGET, annotate, fit, gallery_row
    from harness.types import PromptEditSample

    dataset = open_dataset({"name": "demo"})
    sample = dataset.load("demo/shapes/square_right")
    drawn, plain = annotate(sample, 128), fit(sample.image, 128)[0]
    assert drawn.shape == plain.shape == (128, 128, 3) and (drawn != plain).any()
    for colour in (HANDLE, TARGET):
        assert (np.abs(drawn.astype(int) - colour).sum(axis=2) < 30).any()
    row = gallery_row(sample, [("identity", sample.image), ("not run", None)], side=128)
    assert row.count("data:image/png;base64,") == 2 and "not run" in row
    prompt = PromptEditSample(sample_id="pie/0/x", image=sample.image, source_prompt="a cat", target_prompt="a [dog]")
    assert "a [dog]" in gallery_row(prompt, [], side=64)


def test_cli_says_why_a_row_matched_nothing_and_how_to_widen_it(store_dir, tmp_path):
    """An empty 'ours' row names the store's variants of its method, each differing field with both values
    (default or row param), and the params that would select a variant; a method that never ran is named."""
    spec = write_spec(tmp_path, {**SPEC, "comparisons": [], "rows": [
        {"label": "Copy-paste r2", "method": "copy_paste", "params": {"radius": 2}},
        {"label": "RegionDrag", "method": "regiondrag"}]})
    proc = subprocess.run([sys.executable, "-m", "harness.report", str(spec), "--store", str(store_dir),
                           "--out", str(tmp_path / "why"), "--resamples", "50"],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "row 'Copy-paste r2' on demo: no variant matched; the store has 2 variant(s) of 'copy_paste'" in err
    assert "radius = 2 in the row, 4 in the store" in err and "radius = 2 in the row, 8 in the store" in err
    assert "To widen the match: params: {radius: " in err
    assert "params: {radius: 4} in the row selects copy_paste-" in err and "params: {radius: 8} in the row" in err
    assert "row 'RegionDrag' on demo: the store holds no variant of method 'regiondrag'; methods run on demo: " \
           "copy_paste, identity" in err
    assert "radius = 2 in the row, 4 in the store" in (tmp_path / "why" / "spec.md").read_text()


def test_model_filter_and_defaults_are_named_when_nothing_matches():
    from harness.registry import METHODS
    from harness.report.collect import Variant
    from harness.report.spec import Row
    from harness.report.table import explain_no_match, match_variant

    defaults = METHODS.get("regiondrag").build({}).describe()["config"]
    swept = Variant("demo", "regiondrag-aaaa", "regiondrag", {**defaults, "noise_scale": 0.6}, "random:tiny", {})
    plain = Variant("demo", "regiondrag-bbbb", "regiondrag", dict(defaults), "random:tiny", {})
    row = Row("RegionDrag", "regiondrag", {})
    assert match_variant(row, "demo", [swept, plain], model="v1-5") is None
    message = explain_no_match(row, "demo", [swept, plain], model="v1-5", spec_model="v1-5")
    assert f"noise_scale = {json.dumps(defaults['noise_scale'])} in the row (the default), 0.6 in the store" in message
    assert "model 'random:tiny' does not contain 'v1-5' (the spec's 'model')" in message
    assert '--model "random:tiny" (or any part of it) selects regiondrag-bbbb' in message
    assert "params: {noise_scale: 0.6} in the row selects regiondrag-aaaa" in message
    assert match_variant(row, "demo", [swept, plain], model="tiny") is plain  # the hint works
    via_cli = explain_no_match(row, "demo", [plain], model="sd21", spec_model="v1-5")
    assert "(--model)" in via_cli
