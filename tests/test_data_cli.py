"""`python -m harness.data describe`: one JSON object on success, a clear message and status 1 on bad data."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.data.__main__ import main
from tests.conftest import shared_path
from tests.dataset_fixtures import write_dragbench_sample, write_dragbench_tree, write_pie_bench


@pytest.mark.integration
def test_describe_command_on_the_real_subset():
    root = shared_path("data", "dragbench-d")
    out = subprocess.run([sys.executable, "-m", "harness.data", "describe", "--dataset", "dragbench_d",
                          "--root", str(root)], capture_output=True, text=True, check=True)
    stats = json.loads(out.stdout)
    assert stats["samples"] == 20 and stats["pairs"] == 32 and stats["categories"]["animals"] == 2
    assert stats["image_sizes"]["512x512"] == 6 and out.stderr == ""


def test_describe_prints_json_and_applies_options(tmp_path, capsys):
    root = write_dragbench_tree(tmp_path / "dr", region=True)
    assert main(["describe", "--dataset", "dragbench_dr", "--root", str(root), "categories=[art_work]",
                 "point_fraction=0.5"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 2 and stats["categories"] == {"art_work": 2}
    assert stats["pairs"] == 4 and stats["dense_pairs"] == 4 and stats["points_per_sample"] == {"4": 2}
    assert main(["describe", "--dataset", "pie_bench", "--root", str(write_pie_bench(tmp_path / "pie")),
                 "--verify"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 3 and stats["verified_pixels"] and stats["family"] == "prompt"


def test_describe_exits_non_zero_naming_the_bad_file(tmp_path, capsys):
    root = write_dragbench_tree(tmp_path / "d")
    write_dragbench_sample(root / "animals" / "broken", meta={"prompt": "x", "points": [[1, 1]], "mask": None})
    assert main(["describe", "--dataset", "dragbench_d", "--root", str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "animals/broken/meta_data.pkl: field 'points' has an odd number of points" in captured.err
    assert "1 of 4 samples are invalid" in captured.err


@pytest.mark.parametrize("argv,status,message", [
    (["describe", "--dataset", "dragbench_d"], 1, "dataset 'dragbench_d': no root given"),
    (["describe", "--dataset", "dragbench", "--root", "."], 2, "unknown dataset 'dragbench'. Did you mean"),
    (["describe", "--dataset", "drag100", "--root", "."], 2, "expected key=value, got 'oops'"),
    (["describe", "--dataset", "drag100", "--root", "/nonexistent/drag100"], 1, "is not a directory"),
    (["describe", "--dataset", "drag100", "--root", ".", "colour=red"], 1, "unknown option(s) ['colour']"),
])
def test_describe_usage_and_root_errors(argv, status, message, capsys):
    if "oops" in message:
        argv = [*argv, "oops"]
    assert main(argv) == status
    assert message in capsys.readouterr().err
