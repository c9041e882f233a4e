"""RegionDrag on the tiny model: exact cycle-SDE reconstruction, gates, determinism, compositing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.diffusion.cycle_sde import CycleSDE
from harness.types import DragSample, RegionPair
from harness.regions import regions_to_dense_points
from methods.regiondrag import RegionDrag


def make_sample(h=72, w=96, mask=None, shift=(16, 0)):
    rng = np.random.default_rng(0)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    tri = np.array([[16, 16], [40, 16], [16, 40]], float)
    region = RegionPair("polygon", tri, tri + shift)
    dh, dt = regions_to_dense_points([region])
    mask = np.ones((h, w), bool) if mask is None else mask
    return DragSample("t/c/s", image, "a photo", [[20, 20]], [[20 + shift[0], 20 + shift[1]]], mask,
                      regions=(region,), dense_handles=dh, dense_targets=dt)


def build(tiny_models, **cfg):
    method = RegionDrag.build(cfg)
    method.setup(tiny_models)
    return method


def test_cycle_sde_replay_reconstructs_exactly(tiny_models):
    """Without edits, the reverse walk with the cached noise returns the input latent (the Cycle-SDE property)."""
    method = build(tiny_models)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64)
    text = torch.zeros(1, 77, 32)
    eps = lambda x, t: tiny_models.unet(x.float(), t, encoder_hidden_states=text).sample.double()
    sde = CycleSDE(method.sde.alphas_cumprod.double(), 20)
    trajectory, noises, x = [x0], [], x0
    for t in range(50, 550, 50):
        x, w = sde.forward_step(eps, x, t, gen)
        trajectory.append(x)
        noises.append(w)
    for t in range(550, 50, -50):
        trajectory.pop()
        x = sde.reverse_step(eps, x, t, noises.pop())
        torch.testing.assert_close(x, trajectory[-1], rtol=0, atol=1e-9)


def test_edit_is_deterministic_and_keeps_size(tiny_models):
    method = build(tiny_models)
    sample = make_sample(h=75, w=90)  # odd sizes: latent 9×11, resized back
    a, b = method.edit(sample, 42), method.edit(sample, 42)
    c = method.edit(sample, 7)
    assert a.image.shape == sample.image.shape and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("gate,expected", [("as_released", [549, 500, 450, 400, 350, 300, 250, 200, 150, 100]),
                                           ("paper", [549, 500, 450, 400, 350, 300, 250, 200]),
                                           ("first_step", [549])])
def test_copy_paste_gate_variants(tiny_models, gate, expected):
    result = build(tiny_models, copy_paste_gate=gate).edit(make_sample(), 42)
    assert result.info["copy_paste_timesteps"] == expected
    assert result.info["denoising_timesteps"] == [549, 500, 450, 400, 350, 300, 250, 200, 150, 100]
    assert result.info["inversion_timesteps"] == list(range(100, 600, 50))


def test_gate_changes_the_output(tiny_models):
    sample = make_sample()
    a = build(tiny_models, copy_paste_gate="as_released").edit(sample, 42).image
    b = build(tiny_models, copy_paste_gate="first_step").edit(sample, 42).image
    assert not np.array_equal(a, b)


def test_pixels_outside_the_mask_are_the_source(tiny_models):
    mask = np.zeros((72, 96), bool)
    mask[8:56, 8:72] = True
    sample = make_sample(mask=mask)
    out = build(tiny_models).edit(sample, 42).image
    assert np.array_equal(out[~mask], sample.image[~mask])
    assert not np.array_equal(out[mask], sample.image[mask])


def test_points_in_lost_rows_are_clipped_and_reported(tiny_models):
    sample = make_sample(h=70, w=96)  # latent height 8 covers rows 0..63
    sample = sample.replace(dense_handles=np.array([[8.0, 68.0]]), dense_targets=np.array([[24.0, 68.0]]))
    result = build(tiny_models).edit(sample, 42)
    assert result.info["points_clipped_to_latent"] == 2


def test_config_validation():
    with pytest.raises(ValueError, match="copy_paste_gate"):
        RegionDrag.build({"copy_paste_gate": "sometimes"})
    with pytest.raises(ValueError, match="unknown config field"):
        RegionDrag.build({"stepz": 3})


@pytest.mark.parametrize("steps,inversion,denoising", [
    (2, [999], [999]),  # grid [999, 500], stride 500: the step from 500 is capped at 999 (was index 1000)
    (3, [666], [666]),
    (5, [400, 600], [599, 400]),
])
def test_low_step_counts_edit_on_the_capped_grid(tiny_models, steps, inversion, denoising):
    result = build(tiny_models, steps=steps).edit(make_sample(), 42)
    assert result.info["inversion_timesteps"] == inversion and result.info["denoising_timesteps"] == denoising
    assert result.image.shape == (72, 96, 3) and result.image.std() > 0


def test_cycle_sde_caps_forward_steps_at_the_last_trained_timestep(tiny_models):
    sde, timesteps = CycleSDE.on_dpm_solver_grid(tiny_models.scheduler_config, 2)
    assert timesteps == [999, 500] and sde.stride == 500
    assert sde.up(500) == 999 and sde.up(499) == 999 and sde.up(0) == 500
    with pytest.raises(ValueError, match="no forward step above t=999"):
        sde.up(999)
    sde20, _ = CycleSDE.on_dpm_solver_grid(tiny_models.scheduler_config, 20)
    assert [sde20.up(t) for t in (50, 500, 949)] == [100, 550, 999]  # the default grid never reaches the cap


@pytest.mark.parametrize("params,message", [
    ({"steps": 1}, r"method\.regiondrag\.steps=1 with start_t=0\.5 gives int\(start_t · steps\) = 0 .*need steps >= 2"),
    ({"steps": 3, "start_t": 0.3}, r"method\.regiondrag\.steps=3 .* need steps >= 4 for start_t=0\.3"),
    ({"start_t": 1.0}, r"need 0 <= end_t <= start_t < 1"),
])
def test_step_counts_without_a_denoising_step_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        RegionDrag.build(params)
