"""Numerical faults and out-of-memory errors: recorded per sample with where they happened, never scored
as numbers, and the run goes on."""
from __future__ import annotations

import copy
import gc
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import tests.reliability_plugins as plugins
from harness.cli import run
from harness.config import compose
from harness.diffusion.latents import decode_to_uint8
from harness.diffusion.numerics import NonFiniteError, check_finite
from harness.faults import release_memory


def config(tmp_path: Path, *overrides: str):
    cfg = compose(["method=[identity]", "metrics=[test_mad]", *overrides])
    cfg["out_dir"] = str(tmp_path / "run")
    return OmegaConf.create(cfg)


def record(tmp_path: Path, method: str, name: str) -> dict:
    return json.loads(next((tmp_path / "run" / "store" / "demo").glob(f"{method}-*/shapes/{name}.json")).read_text())


def test_check_finite_names_stage_and_step() -> None:
    x = torch.zeros(2, 3)
    assert check_finite(x, "denoising", 0) is x
    x[1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"non-finite values in inversion at step 4 \(t=801\): 0 NaN and 1 Inf") as info:
        check_finite(x, "inversion", 4, 801)
    assert (info.value.where, info.value.step, info.value.timestep) == ("inversion", 4, 801)


def test_nan_at_step_k_is_recorded_with_the_step_and_never_scored(tmp_path: Path) -> None:
    summary = run(config(tmp_path, "+method.test_nan_at_step={nan_step:3}"))
    info = {v["method"]: v for v in summary["edit"].values()}["test_nan_at_step"]
    assert (info["edited"], info["failed"]) == (2, 1)
    error = record(tmp_path, "test_nan_at_step", "square_right")["error"]
    assert error["type"] == "NonFiniteError" and error["where"] == "denoising"
    assert error["step"] == 3 and error["timestep"] == 400 and "step 3" in error["message"]
    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    bad = scores[(scores["method"] == "test_nan_at_step") & (scores["sample_id"] == "demo/shapes/square_right")]
    assert list(bad["status"]) == ["failed"] and bad["value"].isna().all()
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv").set_index("method")
    assert board.loc["test_nan_at_step", "n"] == 2 and board.loc["test_nan_at_step", "failed"] == 1


def test_float_output_with_nan_is_caught_by_the_edit_stage(tmp_path: Path) -> None:
    run(config(tmp_path, "+method.test_float_nan_output={}"))
    error = record(tmp_path, "test_float_nan_output", "disc_brush")["error"]
    assert error["type"] == "NonFiniteError" and error["where"] == "method output"


def test_non_finite_metric_value_is_a_metric_failure(tmp_path: Path, monkeypatch) -> None:
    from harness.metrics.base import MetricValue

    monkeypatch.setattr(plugins.MeanAbsDiff, "compute", lambda self, s, e, r: MetricValue(float("nan")))
    run(config(tmp_path))
    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    assert (scores["status"] == "metric_failed").all() and scores["value"].isna().all()
    cache = json.loads(next((tmp_path / "run" / "store").rglob("disc_brush.scores.json")).read_text())
    assert cache["test_mad"]["value"] is None and "NonFiniteError" in cache["test_mad"]["error"]


def test_regiondrag_reports_the_denoising_step_that_went_non_finite(tiny_models) -> None:
    """The real method's per-step checks: a UNet that returns NaN from its 4th call on."""
    from harness.data.demo import DemoDataset
    from harness.registry import METHODS

    method = METHODS.get("regiondrag").build({"steps": 4})
    method.setup(tiny_models)
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        if calls["n"] >= 4:
            output.sample.fill_(float("nan"))
        return output

    handle = tiny_models.unet.register_forward_hook(poison)
    try:
        with pytest.raises(NonFiniteError) as info:
            method.edit(DemoDataset().load_sample("demo/shapes/square_right"), 42)
    finally:
        handle.remove()
    # 4 steps, start_t 0.5: 2 inversion steps (UNet calls 1-2), then denoising steps 0 and 1 (calls 3-4)
    assert (info.value.where, info.value.step) == ("denoising", 1)


class _Decoded:
    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample


def test_fp16_vae_overflow_is_redone_in_float32_and_noted(tiny_models) -> None:
    """A half-precision VAE whose mid-block activations overflow (×1e5: Inf in fp16, fine in fp32)."""
    vae = copy.deepcopy(tiny_models.vae).to(torch.float16)
    vae.decoder.mid_block.register_forward_hook(lambda module, inputs, output: output * 1e5)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = vae.decode(latent.half() / vae.config.scaling_factor).sample
    assert not torch.isfinite(raw).all(), "the simulated overflow must make the fp16 decode non-finite"
    info: dict = {}
    image = decode_to_uint8(vae, latent, info)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert info["vae_upcast"]["from"] == "float16"
    assert vae.dtype == torch.float16, "the shared VAE is restored to its dtype"
    # The fallback is exactly a float32 decode of the same VAE.
    expected = decode_to_uint8(copy.deepcopy(vae).to(torch.float32), latent)
    assert np.array_equal(image, expected)


def test_finite_decodes_are_untouched_and_non_finite_latents_refused(tiny_models) -> None:
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    info: dict = {}
    decode_to_uint8(tiny_models.vae, latent, info)
    assert info == {}
    latent[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="latent before vae_decode"):
        decode_to_uint8(tiny_models.vae, latent)


def test_out_of_memory_on_one_sample_is_recorded_released_and_the_run_goes_on(tmp_path: Path) -> None:
    plugins.OomOnSample.last_allocation = None
    gc.disable()  # only the harness's own collection may free the failed sample's reference cycle
    try:
        summary = run(config(tmp_path, "method=[]", "+method.test_oom={on:disc}"))
    finally:
        gc.enable()
    (info,) = summary["edit"].values()
    assert (info["edited"], info["failed"]) == (2, 1)
    error = record(tmp_path, "test_oom", "disc_brush")["error"]
    assert error["type"] == "OOM" and error["exception"].endswith("OutOfMemoryError")
    assert error["released"]["gc"] is True
    # the next sample ran after the failed sample's memory was freed
    assert record(tmp_path, "test_oom", "square_right")["info"]["previous_allocation_released"] is True
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert (board["n"].item(), board["failed"].item()) == (2, 1)


def test_release_memory_empties_the_cuda_cache_when_there_is_one(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: 3 * 2 ** 20)
    assert release_memory() == {"gc": True, "cuda_empty_cache": True, "cuda_allocated_mib": 3.0}
    assert calls == ["empty_cache"]
