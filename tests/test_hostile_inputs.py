"""Broken and hostile datasets: each case fails one sample (or refuses the dataset) with an error that
names the file and the field; the run goes on and nothing is written outside `out_dir`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import tests.reliability_plugins  # noqa: F401  (registers the test loaders)
from harness.cli import run
from harness.config import compose
from harness.data.base import DataError
from harness.registry import DATASETS
from tests.hostile_corpus import CASES, PICKLE_MARKER, Case, write_fixture


def tree(root: Path, skip: Path) -> dict[str, str]:
    """Every path under `root` (except under `skip`) with a hash of its bytes or link target."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        if path.is_symlink():
            out[str(path)] = "link:" + str(path.readlink())
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path)] = "dir"
    return out


def harness_config(name: str, root: Path, out: Path, *overrides: str):
    cfg = compose(["method=[identity]", "metrics=[time]", f"dataset.name={name}", *overrides])
    cfg["dataset"]["root"] = str(root)
    cfg["out_dir"] = str(out)
    return OmegaConf.create(cfg)


def records(out: Path) -> dict[str, dict]:
    found = {}
    for path in (out / "store").rglob("*.json"):
        if path.name != "method.json" and not path.name.endswith(".scores.json"):
            record = json.loads(path.read_text())
            found[record["sample_id"].rsplit("/", 1)[-1]] = record
    return found


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.format}-{c.name}")
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    if case.format not in DATASETS:
        pytest.skip(f"dataset loader {case.format!r} is not registered on this branch")
    root, out = tmp_path / "data", tmp_path / "run"
    paths = write_fixture(case.format, root)
    case.corrupt(paths)
    before = tree(tmp_path, skip=out)
    cfg = harness_config(case.format, root, out)

    if case.level == "dataset":
        with pytest.raises(DataError) as info:
            run(cfg)
        assert all(s in str(info.value) for s in case.expect), str(info.value)
        assert not (out / "store").exists()
    else:
        summary = run(cfg)
        (edit,) = summary["edit"].values()
        assert (edit["edited"], edit["failed"]) == (1, 1), edit
        found = records(out)
        assert found["good"]["status"] == "ok" if "good" in found else found["000000000000"]["status"] == "ok"
        bad = found.get("bad") or found["000000000001"]
        assert bad["status"] == "failed" and bad["error"]["type"] in ("DataError", "UnpicklingError"), bad["error"]
        message = bad["error"]["message"]
        assert all(s in message for s in case.expect), message
        board = (out / "leaderboard.csv").read_text()
        assert ",1,1" in board.splitlines()[1]  # n = 1 scored, failed = 1
    assert tree(tmp_path, skip=out) == before, "files outside out_dir changed"
    assert not any(PICKLE_MARKER in p for p in tree(tmp_path, skip=tmp_path / "none")), "a pickle ran code"


def test_hostile_sample_ids_are_left_out_and_reported(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "run"
    summary = run(harness_config("test_hostile_ids", tmp_path / "unused", out))
    (edit,) = summary["edit"].values()
    assert (edit["samples"], edit["edited"]) == (1, 1)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(out in p.parents for p in written)
    refused = json.loads((out / "run.json").read_text())["dataset"]["refused_ids"]
    assert set(refused) == set(tests.reliability_plugins.HostileIds.IDS) - {"test_hostile_ids/c/good"}
    assert all("invalid sample id" in why for why in refused.values())


def test_missing_dataset_root_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        run(harness_config("test_folder", tmp_path / "nope", tmp_path / "run"))
    assert not (tmp_path / "run" / "store").exists()
