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


def test_profile_lora_step_groups_kernels_by_kind():
    from benchmarks.profile_lora_step import kind

    assert kind("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>") == "attention"
    assert kind("fmha_cutlassB_f16_aligned_64x64_k64_sm80") == "attention"  # attention before the cutlass GEMMs
    assert kind("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64") == "matmul"
    assert kind("void cudnn::engines_precompiled::nchwToNhwcKernel<__half>") == "convolution"
    assert kind("Optimizer.step#AdamW.step") == "optimizer"
    assert kind("void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<c10::Half>") == "other"
    assert kind("void at::native::vectorized_elementwise_kernel<8, float16_copy_kernel_cuda>") == "elementwise / copy"
