"""Leaderboards across runs: results.json per run, the merge of many runs, the static site, `validate`.

Three demo runs, cheap on purpose (identity and copy_paste only: no diffusion model; LPIPS on a random
backbone and the edit time): (a) the defaults, (b) copy_paste alone with radius 4 and another seed, (c) the
defaults as a sharded run (shard.count=2, both shards into one store, then the merge run that reports).
The shards run one after the other in this process, which writes the same store as two processes would
(tests/test_scaleout.py runs shards as separate processes through submitit).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from harness.cli import run
from harness.config import compose
from harness.report.__main__ import main as report_main
from harness.report.merge import MergeError, load_sources, load_specs, merge
from harness.report.results import ResultsError, build_results, read_results, schema_errors
from harness.report.validate import validate_submission
from harness.store import MethodStore
from tests.headless import CHROMIUM, Browser

LPIPS = "lpips_alex@regiondrag"
FAST = ["method=[identity,copy_paste]", f"metrics=[{LPIPS},time]", "reporting.bootstrap=100", "reporting.gallery=1"]


def demo_run(out: Path, *overrides: str) -> None:
    cfg = compose([*FAST, *overrides])
    cfg["out_dir"] = str(out)
    run(OmegaConf.create(cfg))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("leaderboard")
    demo_run(root / "a")
    demo_run(root / "b", "method=[copy_paste]", "method.copy_paste.radius=4", "seed=7")
    for index in (0, 1):
        demo_run(root / "c", "shard.count=2", f"shard.index={index}")
    demo_run(root / "c", "stages=[score,report]")
    return {name: root / name for name in "abc"}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Result:
    """`python -m harness.report ARGS` in this process (a subprocess would pay the imports again)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = report_main(list(args))
    return Result(code, out.getvalue(), err.getvalue())


def cells(doc: dict, metric: str) -> dict[str, dict]:
    return {doc["variants"][f"{c['dataset']}/{c['method_key']}"]["method"] + str(doc["variants"][f"{c['dataset']}/{c['method_key']}"]["config"]): c
            for c in doc["cells"] if c["metric"] == metric}


# ------------------------------------------------------------------------------------------ results.json

def test_every_run_writes_results_with_provenance(runs):
    doc = read_results(runs["a"] / "results.json")  # schema-checked
    run_info = doc["run"]
    assert run_info["editlab"]["version"] and run_info["seeds"]["edit"] == 42 and run_info["versions"]["torch"]
    assert run_info["smoke"] and any("random" in r for r in run_info["smoke_reasons"])
    lpips = cells(doc, LPIPS)
    identity, copy_paste = lpips["identity{}"], lpips["copy_paste{'radius': 8}"]
    assert identity["mean"] == 0.0 and identity["n"] == 3 and identity["failed"] == 0 and identity["nan"] == 0
    assert copy_paste["mean"] > 0 and copy_paste["ci"][0] <= copy_paste["mean"] <= copy_paste["ci"][1]
    assert (copy_paste["direction"], copy_paste["table_scale"], copy_paste["protocol"]) == ("lower", 100.0, "regiondrag")
    assert "random" in copy_paste["settings"]["network"] and copy_paste["smoke"]
    assert cells(doc, "time")["identity{}"]["protocol"] == "run"
    variant = doc["variants"][f"demo/{copy_paste['method_key']}"]
    assert variant["reproduces_release"] is True and variant["seeds"] == [42] and variant["outputs"] == 3
    radius4 = next(v for v in read_results(runs["b"])["variants"].values() if v["method"] == "copy_paste")
    assert radius4["reproduces_release"] is False and radius4["seeds"] == [7]

    sharded = read_results(runs["c"])
    assert [f["file"] for f in sharded["run"]["run_files"]] == ["run.json", "run.shard-0-of-2.json", "run.shard-1-of-2.json"]
    assert sharded["run"]["shards"] == 2 and cells(sharded, LPIPS)["copy_paste{'radius': 8}"]["n"] == 3


def test_results_cli_regenerates_the_same_cells(runs, tmp_path):
    out = tmp_path / "a"
    shutil.copytree(runs["a"], out)
    before = json.loads((out / "results.json").read_text())
    (out / "results.json").unlink()
    proc = cli("results", "--store", str(out))
    assert proc.returncode == 0, proc.stderr
    after = json.loads((out / "results.json").read_text())
    assert after["cells"] == before["cells"] and after["variants"] == before["variants"]
    assert cli("results", "--store", str(tmp_path / "nowhere")).returncode == 2


def test_schema_errors_name_the_field(runs):
    doc = json.loads((runs["a"] / "results.json").read_text())
    doc["cells"][0]["direction"] = "sideways"
    del doc["run"]["seeds"]
    next(iter(doc["variants"].values()))["model"] = {"identity": "sd15", "weights": {"files": {"unet.safetensors": "x"}}}
    errors = schema_errors(doc, "x.json")
    assert any("cells/0/direction" in e for e in errors) and any("'seeds' is a required property" in e for e in errors)
    assert any("model/weights/files/unet.safetensors: 'x' does not match" in e for e in errors)


# ---------------------------------------------------------------------------------------------- merge

def test_merge_keeps_agreeing_cells_once_and_shows_conflicts(runs, tmp_path):
    board = merge(load_sources([runs["a"], runs["b"], runs["c"]], allow_smoke=True))
    table = next(t for t in board.tables if t["protocol"] == "regiondrag")
    rows = {r["label"]: r for r in table["rows"]}
    assert set(rows) == {"identity", "copy_paste", "copy_paste [radius=4]"}
    run_ids = {name: read_results(runs[name])["run"]["id"] for name in "abc"}
    default = rows["copy_paste"]["cells"][LPIPS]
    assert len(default["entries"]) == 1 and default["entries"][0]["runs"] == [run_ids["a"], run_ids["c"]]
    assert rows["copy_paste [radius=4]"]["runs"] == [run_ids["b"]]
    assert rows["identity"]["cells"][LPIPS]["entries"][0]["runs"] == [run_ids["a"], run_ids["c"]]
    assert not board.conflicts
    timing = next(t for t in board.tables if t["protocol"] == "run")
    assert len(next(r for r in timing["rows"] if r["label"] == "copy_paste")["cells"]["time"]["entries"]) == 2  # per run

    # a run that disagrees: shown beside the other, never averaged
    doc = json.loads((runs["c"] / "results.json").read_text())
    bad = copy.deepcopy(doc)
    bad["run"]["id"] = "0123456789ab"
    cell = next(c for c in bad["cells"] if c["metric"] == LPIPS and c["method_key"].startswith("copy_paste"))
    cell["mean"] *= 1.5
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps(bad))
    board = merge(load_sources([runs["a"], tmp_path / "bad"], allow_smoke=True))
    slot = next(r for r in board.tables[0]["rows"] if r["label"] == "copy_paste")["cells"][LPIPS]
    assert slot["conflict"] and [e["mean"] for e in slot["entries"]] == [cell["mean"] / 1.5, cell["mean"]]
    assert len(board.conflicts) == 1 and "mean" in board.conflicts[0]


def test_rows_are_kept_apart_by_weight_hashes(runs, tmp_path):
    """The same store key on other weights (a fine-tune of the same identity) is another row, not a conflict."""
    paths = []
    for i, digest in enumerate(("a" * 64, "b" * 64)):
        doc = json.loads((runs["a"] / "results.json").read_text())
        doc["run"]["id"] = f"{i:012d}"
        for variant in doc["variants"].values():
            variant["model"] = {"identity": "sd15", "dtype": "float16", "weights": {"unet_sha256": digest}}
        paths.append(tmp_path / f"w{i}.json")
        paths[-1].write_text(json.dumps(doc))
    board = merge(load_sources(paths, allow_smoke=True))
    rows = next(t for t in board.tables if t["protocol"] == "regiondrag")["rows"]
    assert len(rows) == 4 and not board.conflicts
    assert sorted(r["weights"]["unet_sha256"][0] for r in rows) == ["a", "a", "b", "b"]


def test_weight_hashes_come_from_the_runs_weights_record(runs, tmp_path):
    """run.json `weights` (the weights lock's record, keyed by config setting) gives each variant its hashes."""
    out = tmp_path / "a"
    shutil.copytree(runs["a"], out)
    record = json.loads((out / "run.json").read_text())
    files = {"unet/diffusion_pytorch_model.safetensors": "c" * 64}
    record["weights"] = {"model": {"setting": "model", "source": "hub:x/sd15", "revision": "abc", "files": files}}
    (out / "run.json").write_text(json.dumps(record))
    key = next(v["method_key"] for v in read_results(out)["variants"].values() if v["method"] == "copy_paste")
    description = json.loads((out / "store" / "demo" / key / "method.json").read_text())
    description["model"] = {"identity": "hub:x/sd15", "dtype": "float16"}
    (out / "store" / "demo" / key / "method.json").write_text(json.dumps(description))
    variants = {v["method"]: v for v in build_results(out)["variants"].values()}
    assert variants["copy_paste"]["model"]["weights"] == {"setting": "model", "source": "hub:x/sd15", "revision": "abc",
                                                          "files": files}
    assert variants["identity"]["model"] is None  # a model-free method has no weights


def test_set_metric_values_become_cells_without_an_interval(runs, tmp_path):
    out = tmp_path / "a"
    shutil.copytree(runs["a"], out)
    key = next(v["method_key"] for v in read_results(out)["variants"].values() if v["method"] == "copy_paste")
    from harness.registry import METRICS
    from harness.results import set_key, set_members

    store = MethodStore(out, "demo", key)
    scores = pd.read_csv(out / "scores.csv")
    ids = sorted(scores.loc[scores["method"] == "copy_paste", "sample_id"].dropna().unique())
    version, members = METRICS.get("fid@pbe").version, set_members(store, ids)
    entry = {"value": 12.5, "n": 3, "version": version, "features": "f", "settings": {"network": "x"}}
    store.save_set_scores({"fid@pbe": {**entry, "key": set_key(version, "f", members)}})
    cell = next(c for c in build_results(out)["cells"] if c["metric"] == "fid@pbe")
    assert (cell["mean"], cell["n"], cell["ci"], cell["protocol"], cell["direction"]) == (12.5, 3, None, "pbe", "lower")
    # an entry that does not match the variant's current outputs is stale and never becomes a cell
    store.save_set_scores({"fid@pbe": {**entry, "key": "k"}})
    assert not [c for c in build_results(out)["cells"] if c["metric"] == "fid@pbe"]


def test_smoke_results_are_refused_unless_asked(runs, tmp_path):
    with pytest.raises(MergeError, match="smoke run"):
        load_sources([runs["a"]])
    proc = cli("leaderboard", str(runs["a"]), "--out", str(tmp_path / "site"))
    assert proc.returncode == 2 and "--allow-smoke" in proc.stderr and not (tmp_path / "site").exists()
    (tmp_path / "broken.yaml").write_text("title: x\n")
    proc = cli("leaderboard", str(runs["a"]), "--out", str(tmp_path / "site"), "--allow-smoke", "--specs",
               str(tmp_path / "broken.yaml"))
    assert proc.returncode == 2 and "broken.yaml: missing field 'metrics'" in proc.stderr


def test_published_values_sit_beside_the_matching_row(runs, tmp_path):
    spec = tmp_path / "paper.yaml"
    spec.write_text(yaml.safe_dump({
        "title": "t", "dataset": "demo", "metrics": [{"id": LPIPS, "label": "LPIPS", "scale": 100}],
        "rows": [{"label": "Copy-paste", "method": "copy_paste", "published": {LPIPS: {"value": 12.5, "unverified": True}}},
                 {"label": "Other paper", "method": None, "published": {LPIPS: 3.0}}]}))
    board = merge(load_sources([runs["a"]], allow_smoke=True), load_specs([spec]))
    rows = {r["label"]: r for r in board.tables[0]["rows"]}
    assert rows["copy_paste"]["paper"][LPIPS]["value"] == pytest.approx(0.125) and rows["copy_paste"]["paper"][LPIPS]["unverified"]
    assert rows["Other paper (paper)"]["published_only"] and not rows["Other paper (paper)"]["cells"]
    assert not rows["identity"]["paper"]


# ------------------------------------------------------------------------------------------- validate

def test_validate_accepts_a_run_folder_and_catches_tampering(runs, tmp_path):
    sub = tmp_path / "submission"
    shutil.copytree(runs["c"], sub)
    proc = cli("validate", str(sub))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid submission" in proc.stdout

    png = next((sub / "store").rglob("*.png"))  # an output that is not the one the numbers came from
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    doc = json.loads((sub / "results.json").read_text())
    doc["cells"][0]["metric"] = "lpips_alex@nowhere"
    doc["cells"][1]["table_scale"] = 7.0
    (sub / "results.json").write_text(json.dumps(doc))
    (sub / "run.shard-1-of-2.json").unlink()
    problems, _ = validate_submission(sub)
    text = "\n".join(problems)
    assert "output PNG missing or its SHA-256 is not the record's" in text
    assert "'lpips_alex@nowhere' is not known" in text and "table_scale: 7.0" in text
    assert "run.shard-1-of-2.json: missing" in text
    proc = cli("validate", str(sub))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_validate_reports_schema_problems_without_a_traceback(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"schema": "editlab.results", "schema_version": 1}))
    proc = cli("validate", str(tmp_path))
    assert proc.returncode == 2 and "'run' is a required property" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ResultsError, match="not valid JSON"):
        (tmp_path / "results.json").write_text("{")
        read_results(tmp_path)


# ----------------------------------------------------------------------------------------------- site

@pytest.fixture(scope="module")
def site(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "board"
    proc = cli("leaderboard", *(str(runs[n] / "results.json") for n in "abc"), "--out", str(out), "--allow-smoke")
    assert proc.returncode == 0, proc.stderr
    assert "3 run(s), 2 table(s), 6 row(s), 0 conflict(s)" in proc.stdout
    return out


def test_site_is_one_offline_folder(site, runs):
    page = (site / "index.html").read_text()
    assert not re.findall(r"(?:src|href)=\"(?:https?:)?//", page) and "http://" not in page.split("leaderboard-data")[0]
    data = json.loads(re.search(r'<script type="application/json" id="leaderboard-data">(.*?)</script>', page, re.S).group(1))
    assert data == json.loads((site / "leaderboard.json").read_text()) | {"generated_at": data["generated_at"]}
    galleries = [r["gallery"] for r in data["runs"].values()]
    assert len(galleries) == 3 and all((site / g).is_file() for g in galleries)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (apt-get install chromium)")
def test_site_in_headless_chromium_sorts_filters_and_shows_provenance(site, runs, tmp_path):
    with Browser(tmp_path / "profile") as browser:
        browser.open((site / "index.html").resolve().as_uri())
        table = "document.querySelector('section[data-table=\"demo|regiondrag\"]')"
        labels = f"[...{table}.querySelectorAll('tbody tr')].map(r => r.dataset.method + ':' + r.cells[0].firstChild.textContent)"
        assert browser.eval(f"{table}.querySelectorAll('tbody tr').length") == 3

        header = f"{table}.querySelector('th[data-metric=\"{LPIPS}\"]')"
        assert browser.eval(f"{header}.textContent").endswith("×100 ↓")
        browser.eval(f"{header}.click()")  # lower is better: best first
        assert browser.eval(labels)[0] == "identity:identity"
        browser.eval(f"{header}.click()")  # reversed
        assert browser.eval(labels)[-1] == "identity:identity"
        assert browser.eval(f"{table}.querySelector('th.sorted-desc') !== null")

        browser.eval("const s = document.getElementById('filter-method'); s.value = 'copy_paste';"
                     "s.dispatchEvent(new Event('change'))")
        assert sorted(browser.eval(labels)) == ["copy_paste:copy_paste", "copy_paste:copy_paste [radius=4]"]

        browser.eval("document.getElementById('filter-release').click()")  # radius=4 is not the method's default
        assert browser.eval(labels) == ["copy_paste:copy_paste"]
        browser.eval("document.getElementById('filter-release').click()")

        cell = f"{table}.querySelector('tr[data-method=\"copy_paste\"] td[data-metric=\"{LPIPS}\"]')"
        assert "95% CI [" in browser.eval(f"{cell}.title")
        browser.eval(f"[...{table}.querySelectorAll('tbody tr')].find(r => r.cells[0].firstChild.textContent === "
                     f"'copy_paste').querySelector('td[data-metric=\"{LPIPS}\"]').click()")
        assert browser.eval("document.getElementById('provenance').hidden") is False
        panel = browser.eval("document.getElementById('provenance-body').innerText")
        ids = {n: read_results(runs[n])["run"]["id"] for n in "abc"}
        assert f"copy_paste · {LPIPS}" in panel and "lpips-0.1:alex:random-backbone" in panel
        assert ids["a"] in panel and ids["c"] in panel and ids["b"] not in panel  # kept once, from runs a and c
        assert "yes (defaults)" in panel and "run.shard-0-of-2.json" in panel
        link = browser.eval("document.querySelector('#provenance-body a').getAttribute('href')")
        assert (site / link).is_file()

        shot = browser.screenshot(tmp_path / "leaderboard.png")
        assert not browser.errors, browser.errors
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 20 and (pixels.min(axis=2) < 200).mean() > 0.01, "screenshot looks blank"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (apt-get install chromium)")
def test_browser_helper_sees_script_errors(tmp_path):
    """Negative control: the error collection does see a failing script (so an empty list means something)."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('boom'); undefined_function();</script></body></html>")
    with Browser(tmp_path / "profile") as browser:
        browser.open(page.as_uri())
        browser.wait_for("true")
        assert any("boom" in e for e in browser.errors) and any("undefined_function" in e for e in browser.errors)


def test_build_results_refuses_a_folder_without_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run store"):
        build_results(tmp_path)
