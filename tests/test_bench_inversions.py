"""The inversion benchmark script (inversions and Pix2Pix-Zero edits) runs on the CPU with --smoke and writes
its JSON record."""
from __future__ import annotations

import importlib.util
import json

import torch

from harness.paths import PROJECT_ROOT


def test_bench_inversions_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_inversions", PROJECT_ROOT / "benchmarks" / "bench_inversions.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        bench.main(["--smoke", "--out", str(tmp_path / "inversions.json")])
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "inversions.json").read_text())
    assert set(record["results"]) == set(bench.KINDS) | set(bench.EDITS)
    assert record["command"] == f"python benchmarks/bench_inversions.py --smoke --out {tmp_path / 'inversions.json'}"
    assert record["model"]["model"] == "random:tiny:seed0" and record["size"] == 64 and record["steps"] == 3
    assert record["results"]["null_text"]["null_text_iterations"] == [2, 2, 2]
    assert record["results"]["style_diffusion"]["style_diffusion_iterations"] == [2, 2, 2]
    assert record["results"]["style_diffusion"]["style_diffusion_encoder"].startswith("random_tiny:")
    assert {"captioning_s", "inversion_s", "editing_s"} <= set(record["results"]["pix2pix_zero:direct"])
    assert all(r["mean_s"] > 0 and len(r["per_image_s"]) == 1 for r in record["results"].values())
    assert "torch" in record["versions"] and "cuda" in record["device"]
    out = capsys.readouterr().out
    assert "| null_text |" in out and "| style_diffusion |" in out and "| pix2pix_zero:ddim |" in out
