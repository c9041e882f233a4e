"""The drag-method GPU benchmark runs end to end on the CPU with --smoke and writes its JSON."""
from __future__ import annotations

import json



def test_bench_drag_methods_smoke(tmp_path, monkeypatch, one_thread):
    from benchmarks.bench_drag_methods import METHODS_TIMED, main

    monkeypatch.setenv("EDITLAB_CACHE", str(tmp_path / "cache"))
    path = main(["--smoke", "--out", str(tmp_path / "drag_methods-smoke.json")])
    result = json.loads(path.read_text())
    assert result["size"] == 64 and "versions" in result and "command" in result and "device" in result
    assert set(result["methods"]) == set(METHODS_TIMED)
    for name, run in result["methods"].items():
        assert run["total_s"] > 0 and run["total_s"] >= run["lora_s"] >= 0
        assert run["ratio_total_to_regiondrag"] > 0
        if name != "regiondrag":
            assert run["lora_s"] > 0 and run["info"]["lora_cache"] == "off"  # every timed edit fits its LoRA
    assert result["methods"]["regiondrag"]["ratio_total_to_regiondrag"] == 1.0
