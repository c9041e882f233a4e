"""Dataset roots as users type them: relative (several components), with `..`, through a symlink, `~`.

An absolute root and a one-component relative root hide the defect these tests guard against (a root joined
onto a path that already starts with it: `../dbd/../dbd` happens to be `../dbd`), so every root here has at
least two components and the commands run from a working directory other than the project root.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.data.__main__ import dataset_config
from harness.data.__main__ import main as data_main
from harness.data.base import open_dataset
from harness.paths import PROJECT_ROOT
from tests.dataset_fixtures import (gradient_image, write_cocoee, write_drag100_sample, write_dragbench_s_sample,
                                    write_dragbench_tree, write_image, write_instruction_folder,
                                    write_pie_bench)

WRITERS = {
    "dragbench_d": lambda root: write_dragbench_tree(root),
    "dragbench_dr": lambda root: write_dragbench_tree(root, region=True),
    "dragbench_sr": lambda root: write_dragbench_tree(root, region=True, nested=False),
    "dragbench_s": lambda root: [write_dragbench_s_sample(root / n) for n in ("lion", "sunset")] and root,
    "drag100": lambda root: [write_drag100_sample(root / n) for n in ("tiger_0", "plants_3")] and root,
    "pie_bench": write_pie_bench,
    "cocoee": lambda root: write_cocoee(root),
    "instruction_folder": write_instruction_folder,
}


def _layout(tmp_path: Path, name: str, spelling: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write dataset `name` under `tmp_path/home/shared/data/<name>` (the project's own layout, seen from a
    checkout at `tmp_path/home/repo`), change into a working directory and return the root spelled as
    `spelling` from there."""
    home = tmp_path / "home"
    data = home / "shared" / "data"
    WRITERS[name](data / name)
    (home / "repo").mkdir()
    (home / "link").symlink_to(data, target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home if spelling == "relative" else home / "repo")
    return {"readme": f"../shared/data/{name}", "relative": f"shared/data/{name}", "symlink": f"../link/{name}",
            "home": f"~/shared/data/{name}"}[spelling]


SPELLINGS = ("readme", "relative", "symlink", "home")


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_loader_reads_every_sample_from_a_relative_root(name, spelling, tmp_path, monkeypatch, capsys):
    root = _layout(tmp_path, name, spelling, monkeypatch)
    assert data_main(["describe", "--dataset", name, "--root", root, "--verify"]) == 0, capsys.readouterr().err
    stats = json.loads(capsys.readouterr().out)
    dataset = open_dataset(dataset_config(name, root, []))
    ids = dataset.sample_ids()
    assert stats["samples"] == len(ids) >= 2
    for sample_id in ids:
        assert dataset.load(sample_id).image.size > 0
        assert dataset.loader.fingerprint(sample_id)


def test_a_root_keeps_its_meaning_when_the_working_directory_changes(tmp_path, monkeypatch):
    """The root is resolved where the dataset is opened: a later change of directory (a report written from
    elsewhere, a library user's `os.chdir`) does not move it."""
    root = _layout(tmp_path, "dragbench_d", "readme", monkeypatch)
    dataset = open_dataset(dataset_config("dragbench_d", root, []))
    monkeypatch.chdir(tmp_path)
    assert all(dataset.load(i).image.size for i in dataset.sample_ids())


def test_a_missing_relative_root_names_what_was_typed_and_where_it_points(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert data_main(["describe", "--dataset", "drag100", "--root", "nowhere/drag100"]) == 1
    err = capsys.readouterr().err
    assert "root nowhere/drag100 is not a directory" in err and str(tmp_path / "nowhere" / "drag100") in err


def _env() -> dict[str, str]:
    """Subprocesses run from a temporary directory import this checkout's `harness`."""
    return dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))


def test_cli_run_and_report_gallery_from_another_directory(tmp_path):
    """`python -m harness` with the README's kind of root (`../shared/data/...`), started outside the project:
    every sample is edited (none failed) and the report's gallery shows each of them."""
    write_dragbench_tree(tmp_path / "shared" / "data" / "dbd")
    (tmp_path / "repo").mkdir()
    proc = subprocess.run([sys.executable, "-m", "harness", "dataset=dragbench_d", "dataset.root=../shared/data/dbd",
                           "method=[copy_paste]", "metrics=[time]", "out_dir=out/dbd"],
                          cwd=tmp_path / "repo", env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "repo" / "out" / "dbd"
    board = (out / "leaderboard.csv").read_text().splitlines()
    header, row = board[0].split(","), board[1].split(",")
    assert row[header.index("n")] == "3" and row[header.index("failed")] == "0", board
    assert "left out" not in proc.stderr
    assert (out / "report.html").read_text().count('class="gallery-row"') == 3
    run = json.loads((out / "run.json").read_text())
    assert run["dataset"]["root"] == "../shared/data/dbd"
    assert run["dataset"]["root_path"] == str(tmp_path / "shared" / "data" / "dbd")


def test_metric_cli_reads_relative_and_home_paths(tmp_path):
    """`python -m harness.metrics compute` with `--source`/`--edited`/`--mask` given relative to the working
    directory (with `..`) and under `~`."""
    a = gradient_image(32, 24, 0)
    b = a.copy()
    b[4:10, 4:10] = 0
    write_image(tmp_path / "imgs" / "src" / "a.png", a)
    write_image(tmp_path / "home" / "b.png", b)
    mask = np.zeros((24, 32), np.uint8)
    mask[0:12, 0:12] = 255
    write_image(tmp_path / "imgs" / "masks" / "m.png", mask)
    work = tmp_path / "work" / "sub"
    work.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "harness.metrics", "compute", "pie_mse_unedit_part",
                           "--source", "../../imgs/src/a.png", "--edited", "~/b.png", "--mask", "../../imgs/masks/m.png"],
                          cwd=work, env=dict(_env(), HOME=str(tmp_path / "home")), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["value"] == 0.0  # the change is inside the mask


@pytest.mark.parametrize("name,victim", [("pie_bench", "annotation_images/0_random_140/000000000000.jpg"),
                                         ("cocoee", "GT_3500/000000001773_GT.png")])
def test_prompt_and_exemplar_loaders_refuse_files_linked_outside_the_root(name, victim, tmp_path, capsys):
    """Every loader reads through the root check, as the drag loaders always did."""
    root = WRITERS[name](tmp_path / name)
    outside = write_image(tmp_path / "secret.png", gradient_image(512, 512))
    (root / victim).unlink()
    (root / victim).symlink_to(outside)
    assert data_main(["describe", "--dataset", name, "--root", str(root)]) == 1
    assert "outside the dataset root" in capsys.readouterr().err
