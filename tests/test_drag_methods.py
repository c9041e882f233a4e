"""The drag methods on the tiny model: determinism, LoRA cache, presets, released quirks, the harness."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from harness.config import compose
from harness.diffusion.drag import PointTrackingError
from harness.registry import METHODS
from harness.types import DragSample

METHOD_NAMES = ["dragdiffusion", "dragnoise", "freedrag", "gooddrag", "sdedrag"]
_DDIM = dict(lora_steps=1, lora_resolution=64, lora_batch_size=1, steps=5)
TINY = {
    "dragdiffusion": dict(_DDIM, n_pix_step=3),
    "dragnoise": dict(_DDIM, n_pix_step=3),
    "freedrag": dict(_DDIM, max_step=4),
    "gooddrag": dict(_DDIM, drag_end_step=2, track_per_step=2, max_drag_per_track=2),
    "sdedrag": dict(lora_steps=1, steps=20, t0=0.3),
}


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(autouse=True)
def lora_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITLAB_CACHE", str(tmp_path / "cache"))


def sample(h: int = 70, w: int = 90, handle=(30, 34), target=(46, 34), mask=None) -> DragSample:
    rng = np.random.default_rng(1)
    image = (rng.random((h, w, 3)) * 60 + 90).astype(np.uint8)
    image[26:42, 22:38] = (220, 40, 30)
    mask = np.ones((h, w), bool) if mask is None else mask
    return DragSample("t/c/square", image, "a red square", [handle], [target], mask)


def build(name: str, models, **overrides):
    method = METHODS.get(name).build({**TINY[name], **overrides})
    method.setup(models)
    return method


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_is_deterministic_keeps_size_and_caches_its_lora(name, tiny_models):
    method, s = build(name, tiny_models), sample()
    first, second = method.edit(s, 42), method.edit(s, 42)
    assert first.image.shape == s.image.shape and first.image.dtype == np.uint8
    assert np.array_equal(first.image, second.image)
    assert first.info["lora_cache"] == "miss" and first.timings["lora"] > 0
    assert second.info["lora_cache"] == "hit" and second.timings["lora"] == 0.0
    json.dumps(first.info)  # the record must serialise


def test_sdedrag_depends_on_the_seed_and_the_others_do_not(tiny_models):
    s = sample()
    sde = build("sdedrag", tiny_models, lora_steps=0)
    assert not np.array_equal(sde.edit(s, 1).image, sde.edit(s, 2).image)
    dd = build("dragdiffusion", tiny_models, lora_steps=0)
    assert np.array_equal(dd.edit(s, 1).image, dd.edit(s, 2).image)  # DDIM and Adam: nothing random


def test_dragdiffusion_moves_the_handles_toward_the_targets(tiny_models):
    result = build("dragdiffusion", tiny_models, lora_steps=0, steps=10, n_pix_step=6).edit(
        sample(96, 96, (28, 44), (52, 44)), 42)
    distances = result.info["handle_distances"]
    assert distances[0] == 12.0 and min(distances[1:]) < distances[0]
    assert result.info["drag_timestep"] == 601 and result.info["inversion_steps"] == 7
    assert result.info["supervision_grid"] == [48, 48] and result.info["latent_size"] == [12, 12]


def test_dragdiffusion_presets():
    cls = METHODS.get("dragdiffusion")
    current = cls.build({}).config
    assert (current.lora_steps, current.lora_lr, current.lora_batch_size, current.inversion_strength,
            current.n_pix_step, current.lora_rank, current.lr, current.lam, current.r_m, current.r_p) == \
        (80, 5e-4, 4, 0.7, 80, 16, 0.01, 0.1, 1, 3)
    old = cls.build({"preset": "v0.1.0", "lora_steps": 100}).config
    assert (old.lora_steps, old.lora_lr, old.lora_batch_size, old.inversion_strength, old.n_pix_step) == \
        (100, 2e-4, 1, 0.75, 40)
    mid = cls.build({"preset": "2023-10-03"}).config
    assert (mid.lora_steps, mid.inversion_strength, mid.n_pix_step) == (60, 0.75, 40)
    with pytest.raises(ValueError, match="preset must be one of"):
        cls.build({"preset": "v9"})


def test_dragnoise_presets_and_validation():
    cls = METHODS.get("dragnoise")
    bench, ui = cls.build({}).config, cls.build({"preset": "ui"}).config
    assert (bench.lora_steps, bench.lora_lr, bench.lam, bench.lr, bench.n_pix_step, bench.end_step) == \
        (200, 2e-4, 0.2, 0.02, 80, 0)
    assert (ui.lora_steps, ui.lora_lr, ui.lora_batch_size, ui.lam, ui.lr, ui.n_pix_step) == (60, 5e-4, 4, 0.1, 0.01, 60)
    with pytest.raises(ValueError, match="point_tracking_border"):
        cls.build({"point_tracking_border": "maybe"})


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_yaml_reproduces_the_config_defaults(name):
    params = compose([f"method=[{name}]"])["method"][name]
    cls = METHODS.get(name)
    assert dataclasses.asdict(cls.build(params).config) == dataclasses.asdict(cls.Config())


@pytest.mark.parametrize("name", ["dragnoise", "gooddrag"])
def test_released_point_tracking_fails_at_the_border_and_intended_clips(name, tiny_models):
    corner = sample(handle=(2, 2), target=(30, 30))
    with pytest.raises(PointTrackingError):
        build(name, tiny_models, lora_steps=0).edit(corner, 42)
    result = build(name, tiny_models, lora_steps=0, point_tracking_border="intended").edit(corner, 42)
    assert result.image.shape == corner.image.shape


def test_dragnoise_propagates_the_bottleneck_until_end_step(tiny_models):
    s = sample()
    full = build("dragnoise", tiny_models, lora_steps=0).edit(s, 42)
    assert full.info["bottleneck_replaced_at"] == [601, 401, 201, 1]
    partial = build("dragnoise", tiny_models, lora_steps=0, end_step=2).edit(s, 42)
    assert partial.info["bottleneck_replaced_at"] == [601, 401]
    assert not np.array_equal(full.image, partial.image)


def test_gooddrag_uses_the_empty_prompt_and_records_its_vae(tiny_models):
    result = build("gooddrag", tiny_models, lora_steps=0).edit(sample(), 42)
    assert result.info["prompt_used"] == "" and "sd-vae-ft-mse needs real weights" in result.info["vae"]
    assert result.info["drag_timestep"] == 601  # round(0.75 · 5) = 4 inversion steps of 5: [801, 601, …]
    assert result.info["drag_updates"] > 0


def test_sdedrag_without_a_drag_reconstructs_its_encoding(tiny_models):
    """Zero displacement, β = α = 1: copy-paste is the identity and Cycle-SDE returns the encoded latent, up to
    float rounding that the random UNet amplifies. How much depends on the CPU's kernels (one thread: 18% of
    pixels off by 2–10 levels; two threads: none off by more than 1), so the bound is on the mean and the
    worst pixel, not bit-exactness: a reconstruction that fails moves whole regions by tens of levels."""
    from harness.diffusion.latents import decode, encode, to_uint8

    s = sample(64, 64, (30, 30), (30, 30))
    result = build("sdedrag", tiny_models, lora_steps=0, alpha=1.0, beta=1.0).edit(s, 42)
    latent = encode(tiny_models.vae, s.image, torch.Generator().manual_seed(42), torch.float32)
    expected = to_uint8(decode(tiny_models.vae, latent), "round")
    difference = np.abs(result.image.astype(int) - expected.astype(int))
    assert difference.mean() < 1.5 and difference.max() <= 16, (difference.mean(), difference.max())


def test_sdedrag_helpers_follow_the_release():
    from methods.sdedrag import copy_and_paste, drag_count, schedule

    assert drag_count(torch.tensor([[3, 0]]), 2.0) == 2  # steps of 3 or 1.5: 1.5 is closer to 2
    assert drag_count(torch.tensor([[2, 0]]), 2.0) == 1 and drag_count(torch.tensor([[10, 0]]), 2.0) == 5
    assert schedule(1, 3, 0, 10, "linear") == 1 and schedule(1, 3, 10, 10, "linear") == 3
    assert schedule(1, 0.5, 10, 10, "cos") == pytest.approx(0.5)
    latent = torch.arange(2 * 4 * 16 * 16, dtype=torch.float32).reshape(2, 4, 16, 16)
    out = copy_and_paste(latent, torch.tensor([[2, 3]]), torch.tensor([[8, 9]]), radius=5, alpha=2.0, beta=0.0,
                         generator=torch.Generator().manual_seed(0))
    # half-sizes shrink to the nearest border: left 2, right 5, up 3, down 5 (upper bounds exclusive)
    torch.testing.assert_close(out[:, :, 6:14, 6:13], 2 * latent[:, :, 0:8, 0:7])
    assert not torch.equal(out[:, :, 0:8, 0:7], latent[:, :, 0:8, 0:7])


def test_each_method_end_to_end_through_the_harness(tmp_path):
    from harness.cli import run

    overrides = [f"method=[{','.join(METHOD_NAMES)}]", "metrics=[time,time_lora_s,time_edit_s]",
                 "+dataset.ids=[demo/shapes/triangle_up]", "strict=true"]
    overrides += [f"method.{name}.{key}={value}" for name, params in TINY.items() for key, value in params.items()]
    cfg = compose(overrides)
    cfg["out_dir"] = str(tmp_path / "run")
    run(OmegaConf.create(cfg))
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv").set_index("method")
    assert sorted(board.index) == sorted(METHOD_NAMES)
    assert (board["n"] == 1).all() and (board["failed"] == 0).all()
    assert (board["time_edit_s"] > 0).all()
    records = {name: json.loads(next((tmp_path / "run" / "store").glob(f"demo/{name}-*/shapes/triangle_up.json"))
                                .read_text()) for name in METHOD_NAMES}
    for record in records.values():  # LoRA time is reported apart, and is 0 exactly when the cache served it
        assert (record["timing"]["lora_s"] == 0) == (record["info"]["lora_cache"] == "hit")
    # FreeDrag's tiny LoRA has DragNoise's spec (rank 16, lr 2e-4): the cache is shared across methods
    assert records["freedrag"]["info"]["lora_cache"] == "hit" and records["dragnoise"]["timing"]["lora_s"] > 0
    record = records["dragdiffusion"]
    assert record["method_config"]["preset"] == "current" and record["method_config"]["n_pix_step"] == 3
    assert "lora_cache" not in record["method_config"] and record["timing"]["method_drag_s"] > 0


@pytest.mark.parametrize("params", [{"steps": 2, "t0": 0.6}, {"steps": 3, "t0": 1.0}, {"steps": 20, "t0": 0.05}])
def test_sdedrag_refuses_grids_without_a_backward_step(params):
    from methods.sdedrag import SDEDragConfig

    with pytest.raises(ValueError, match=rf"method\.sdedrag\.steps={params['steps']} with t0=.* need 2 <= "
                                         r"int\(t0 · steps\) <= steps − 1"):
        SDEDragConfig(**params)
