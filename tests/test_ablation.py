"""Ablation experiments end to end on the demo (tiny model, CPU), and the run's HTML page in a browser.

The sweeps are trimmed (one sample, two swept values plus the reference, few steps) to keep the suite
fast; the experiment configs themselves are unchanged.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from harness.cli import run
from harness.config import compose
from harness.paths import CONF_DIR

FAST = ["dataset=demo", "dataset.limit=1", "metrics=[lpips_alex@regiondrag,time]", "reporting.bootstrap=100",
        "reporting.gallery=1"]


def run_experiment(out: Path, *overrides: str) -> dict:
    cfg = compose([*overrides, *FAST])
    cfg["out_dir"] = str(out)
    return run(OmegaConf.create(cfg))


@pytest.fixture(scope="module")
def timing_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation") / "copy_paste_timing"
    # 6 steps: denoising at t = 666, 500, 333, so end_t = 0.0 / 0.5 paste at 3 / 2 steps and first_step at 1.
    summary = run_experiment(out, "experiment=copy_paste_timing", "method.regiondrag.steps=6", "ablation.values=[0.0,0.5]")
    return out, summary


def records(out: Path, pattern: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(pattern)) if not p.name.endswith(".scores.json")]


def test_copy_paste_timing_sweeps_end_t_with_the_paper_gate(timing_run):
    out, summary = timing_run
    folder = out / "ablation" / "copy_paste_timing"
    for name in ("table.csv", "table.md", "plot.png", "plot.svg"):
        assert (folder / name).is_file(), name
    assert Image.open(folder / "plot.png").size[0] > 300
    assert (folder / "plot.svg").read_text().lstrip().startswith("<?xml")
    table = pd.read_csv(folder / "table.csv")
    assert list(dict.fromkeys(table["label"])) == ["end_t=0", "end_t=0.5", "copy-paste at the first step only"]
    assert set(table["metric"]) == {"lpips_alex@regiondrag", "time"} and (table["n"] == 1).all()
    assert table.loc[table["label"] == "copy-paste at the first step only", "x"].isna().all()
    # every point is its own method variant; the gate and end_t reach the method
    recs = records(out, "store/demo/regiondrag-*/shapes/*.json")
    pasted = sorted((r["method_config"]["copy_paste_gate"], r["method_config"]["end_t"], len(r["info"]["copy_paste_timesteps"]))
                    for r in recs)
    assert pasted == [("first_step", 0.2, 1), ("paper", 0.0, 3), ("paper", 0.5, 2)]
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board["method"]) == ["regiondrag [copy-paste at the first step only]", "regiondrag [end_t=0.5]",
                                       "regiondrag [end_t=0]"]
    md = (folder / "table.md").read_text()
    assert "SMOKE RUN" in md and "lpips_alex@regiondrag ×100" in md
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "finished" and len(run_json["ablation"]["points"]) == 3


def test_point_percentage_makes_each_fraction_a_dataset_variant(tmp_path):
    out = tmp_path / "point_percentage"
    summary = run_experiment(out, "experiment=point_percentage", "method.regiondrag.steps=4", "ablation.values=[1.0,0.1]")
    folder = out / "ablation" / "point_percentage"
    assert all((folder / n).is_file() for n in ("table.csv", "table.md", "plot.png", "plot.svg"))
    assert sorted(p.name for p in (out / "store").iterdir()) == ["demo", "demo@pf0.1-ps0"]
    full = records(out, "store/demo/regiondrag-*/shapes/*.json")[0]["info"]["dense_pairs"]
    tenth = records(out, "store/demo@pf0.1-ps0/regiondrag-*/shapes/*.json")[0]["info"]["dense_pairs"]
    assert tenth == max(1, round(0.1 * full)) < full  # harness.regions.subsample_pairs keeps at least one pair
    table = summary["ablation_table"]
    assert sorted(table["x"].unique()) == [0.1, 1.0]
    # rerunning reuses every point's outputs
    again = run_experiment(out, "experiment=point_percentage", "method.regiondrag.steps=4", "ablation.values=[1.0,0.1]")
    assert all(info["reused"] == 1 and info["edited"] == 0 for info in again["edit"].values())


def test_experiment_configs_compose_with_their_own_dataset():
    if not (CONF_DIR / "dataset" / "dragbench_dr.yaml").is_file():
        pytest.skip("conf/dataset/dragbench_dr.yaml is not in this checkout yet")
    for name in ("point_percentage", "copy_paste_timing"):
        cfg = compose([f"experiment={name}"])
        assert cfg["dataset"]["name"] == "dragbench_dr" and list(cfg["method"]) == ["regiondrag"]
        assert cfg["ablation"]["name"] == name


# --------------------------------------------------------------------------------------- HTML in a browser

CHROMIUM = Path("/usr/bin/chromium")


def open_in_chromium(page: Path, tmp: Path) -> tuple[np.ndarray, str]:
    """Screenshot `page` headless; returns the pixels and chromium's log (console messages included)."""
    shot = tmp / f"{page.stem}.png"
    proc = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
                           f"--screenshot={shot}", "--window-size=1200,900", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert shot.is_file(), proc.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB")), proc.stdout + proc.stderr


def console_messages(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def assert_offline_page(html: str) -> None:
    assert "<script" not in html
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith("data:") for s in sources), [s[:40] for s in sources if not s.startswith("data:")]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (apt-get install chromium)")
def test_run_page_and_spec_page_open_in_headless_chromium(timing_run, tmp_path):
    out, _ = timing_run
    html = (out / "report.html").read_text()
    assert_offline_page(html)
    for section in ("Ablation: copy_paste_timing", "Leaderboard", "95% bootstrap intervals", "Time versus quality", "Gallery"):
        assert section in html, section
    assert html.count('<div class="gallery-row">') == 1 and html.count("<figure>") == 1 + 3  # source + 3 points

    from harness.report.collect import load_store
    from harness.report.render import write_all
    from harness.report.spec import load_spec
    from harness.report.table import build_table
    from harness.paths import PROJECT_ROOT

    spec_page = write_all(build_table(load_spec(PROJECT_ROOT / "reports" / "regiondrag_table1.yaml"), load_store(out),
                                      resamples=100), tmp_path / "spec", ("html",))["html"]
    assert_offline_page(spec_page.read_text())

    for page in (out / "report.html", spec_page):
        pixels, log = open_in_chromium(page, tmp_path)
        assert pixels.shape[:2] == (900, 1200)
        assert pixels.std() > 20, f"{page.name}: screenshot looks blank"
        assert (pixels.min(axis=2) < 200).mean() > 0.01, f"{page.name}: almost nothing drawn"
        assert not console_messages(log), console_messages(log)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (apt-get install chromium)")
def test_console_check_catches_script_errors(tmp_path):
    """Negative control: the console scan does see errors (so a clean scan above means something)."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><script>undefined_function();</script></body></html>')
    _, log = open_in_chromium(page, tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console_messages(log))
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
