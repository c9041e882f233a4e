"""The DIFT variant study and the start-up profile run on the CPU with --smoke and write their JSON records."""
from __future__ import annotations

import importlib.util
import json

import torch

from harness.paths import PROJECT_ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_dift_smoke_compares_every_variant_with_the_seed_spread(tmp_path):
    bench = load_script("bench_dift")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    bench.main(["--smoke", "--out", str(tmp_path / "dift.json")])
    assert torch.backends.cuda.matmul.allow_tf32 == tf32  # variants restore the process settings
    record = json.loads((tmp_path / "dift.json").read_text())
    rows = {r["variant"]: r for r in record["variants"]}
    assert set(rows) == {label for label, _, _ in bench.VARIANTS["md_dift@dragdiffusion"]}
    baseline, seed = rows["eager (default)"], rows["seed 43"]
    assert baseline["points_moved"] == 0 and baseline["md_mean_abs_delta"] == 0 and baseline["s_per_sample"] > 0
    # the yardstick: another seed must move matches and MD, or the table judges nothing
    assert seed["points_moved"] > 0 and seed["md_mean_abs_delta"] > 0
    assert all(len(r["md"]) == record["samples"] == 2 for r in record["per_sample_md"])
    assert "torch" in record["versions"]


def test_profile_startup_smoke_times_each_phase(tmp_path):
    profile = load_script("profile_startup")
    record = profile.main(["--smoke", "--out", str(tmp_path / "startup.json"), "--top", "5"])
    phases = [p["phase"] for p in record["phases"]]
    assert phases[0] == "import torch" and "first build (editing model)" in phases and phases[-1] == "LPIPS AlexNet build"
    assert all(p["s"] >= 0 for p in record["phases"]) and record["total_s"] > 0
    assert any("load_models" in line for line in record["first_build_profile"])
    assert json.loads((tmp_path / "startup.json").read_text())["phases"] == record["phases"]
