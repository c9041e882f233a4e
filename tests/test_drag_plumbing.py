"""Shared drag plumbing: DDIM, point tracking, motion supervision, mask regulariser, MasaCtrl, block taps, LoRA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.diffusion.attention_control import MutualSelfAttention, controlled_attention
from harness.diffusion.ddim_drag import drag_schedule
from harness.diffusion.ddim_inversion import ddim_invert
from harness.diffusion.drag import (DragLoop, PointTrackingError, bilinear_sample, mask_regulariser,
                                    motion_supervision, optimise_drag, to_grid, track_points)
from harness.diffusion.features import BlockTap
from harness.diffusion.lora import ADAPTER, LoraSpec, fit_lora, lora_for_image, use_lora
from harness.types import DragSample


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture()
def lora_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "lora"


def square_sample(size: int = 64, shift: int = 16, mask: np.ndarray | None = None) -> DragSample:
    rng = np.random.default_rng(0)
    image = (rng.random((size, size, 3)) * 60 + 90).astype(np.uint8)
    image[20:36, 12:28] = (220, 40, 30)
    mask = np.ones((size, size), bool) if mask is None else mask
    return DragSample("t/c/square", image, "a red square", [[20, 28]], [[20 + shift, 28]], mask)


# ------------------------------------------------------------------------------------------------ DDIM


def test_drag_schedule_timesteps_and_start_index():
    from harness.diffusion.ddim_drag import DDIMDragConfig

    ddim = drag_schedule(50)
    assert ddim.timesteps[:3] == [981, 961, 941] and ddim.timesteps[-1] == 1
    for strength, n, t in ((0.7, 35, 681), (0.75, 38, 741)):  # round(37.5) = 38
        assert DDIMDragConfig(inversion_strength=strength).inversion_steps == n and ddim.timesteps[50 - n] == t
    with pytest.raises(ValueError, match="ε-prediction"):
        drag_schedule(50, "v_prediction")


def test_drag_schedule_step_equals_diffusers_scheduler_step():
    from diffusers import DDIMScheduler

    from harness.models.architectures import SCHEDULER

    ddim, scheduler = drag_schedule(50), DDIMScheduler(**SCHEDULER)
    scheduler.set_timesteps(50)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    for t in (981, 681, 21, 1):
        torch.testing.assert_close(ddim.step(eps, t, x), scheduler.step(eps, t, x, eta=0.0).prev_sample)


def test_partial_ddim_inversion_is_undone_by_the_remaining_steps_for_a_constant_eps():
    """With ε independent of (x, t), n inversion steps and the last n denoising steps are exact inverses."""
    ddim = drag_schedule(10)
    eps = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    trajectory = ddim_invert(lambda x, t: eps, x0, ddim, 7)
    assert len(trajectory) == 8
    x = trajectory[-1]
    for t in ddim.timesteps[ddim.steps - 7:]:
        x = ddim.step(eps, t, x)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ points and supervision


def test_to_grid_scales_and_rounds_like_the_release():
    grid = to_grid(np.array([[101.0, 341.0], [3.0, 5.0]]), (341, 512), (170, 256))
    # x: round(101 · 256/512) = round(50.5) = 50 (half to even); y: round(341 · 170/341) = 170
    assert grid.tolist() == [[50.0, 170.0], [2.0, 2.0]]


def test_point_tracking_finds_a_known_shift():
    features = torch.randn(1, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    moved = torch.roll(features, shifts=(2, -3), dims=(2, 3))  # content moves 2 down, 3 left
    handles = torch.tensor([[15.0, 15.0], [20.0, 9.0]])
    found = track_points(features, moved, handles, handles, radius=3)
    assert found.tolist() == [[12.0, 17.0], [17.0, 11.0]]
    # a shift beyond the window is not found
    far = torch.roll(features, shifts=(0, 5), dims=(2, 3))
    assert found.tolist() != track_points(features, far, handles, handles, radius=3).tolist()


def test_point_tracking_border_modes():
    features = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    corner = torch.tensor([[1.0, 1.0]])
    assert track_points(features, features, corner, corner, radius=3).tolist() == [[1.0, 1.0]]
    with pytest.raises(PointTrackingError, match="border"):
        track_points(features, features, corner, corner, radius=3, border="none")
    # bottom-right: the release truncates the slice, so both modes agree
    edge = torch.tensor([[15.0, 14.0]])
    assert track_points(features, features, edge, edge, 3, "none").tolist() == [[15.0, 14.0]]


def test_shifted_patch_is_the_released_bilinear_formula():
    """`interpolate_feature_patch` of DragDiffusion, written out: four corners weighted by the fraction."""
    feat = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    y1, x1, d = 4, 5, torch.tensor([0.6, -0.3])  # window rows 4..6, cols 5..7 shifted by (dx, dy) = d
    yy, xx = y1 + d[1], x1 + d[0]
    y0, x0 = int(torch.floor(yy)), int(torch.floor(xx))
    wy, wx = yy - y0, xx - x0
    ref = ((1 - wx) * (1 - wy) * feat[..., y0:y0 + 3, x0:x0 + 3] + (1 - wx) * wy * feat[..., y0 + 1:y0 + 4, x0:x0 + 3]
           + wx * (1 - wy) * feat[..., y0:y0 + 3, x0 + 1:x0 + 4] + wx * wy * feat[..., y0 + 1:y0 + 4, x0 + 1:x0 + 4])
    gy, gx = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
    ours = bilinear_sample(feat, torch.stack([x1 + gx + d[0], y1 + gy + d[1]], dim=-1))
    torch.testing.assert_close(ours, ref[0], atol=1e-5, rtol=0)


def test_motion_supervision_skips_reached_handles_and_weights_patches():
    feat = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    near = motion_supervision(feat, torch.tensor([[5.0, 5.0]]), torch.tensor([[6.0, 6.0]]), 1)
    assert float(near) == 0.0
    loss = motion_supervision(feat, torch.tensor([[5.0, 5.0]]), torch.tensor([[9.0, 5.0]]), 1)
    expected = 9 * (feat[0, :, 4:7, 5:8] - feat[0, :, 4:7, 4:7]).abs().mean()  # d = (1, 0): one column right
    torch.testing.assert_close(loss, expected)


def test_motion_supervision_drags_a_bump_to_its_target():
    """Optimising a feature map with motion supervision + tracking carries the handle's feature to the target."""
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    bump = torch.exp(-((xs - 8) ** 2 + (ys - 12) ** 2) / 18)
    features = torch.stack([bump, xs / 32, ys / 32])[None]
    handles, targets = torch.tensor([[8.0, 12.0]]), torch.tensor([[20.0, 12.0]])
    outcome = optimise_drag(lambda v: (v, v), features, (features, features), handles, targets,
                            torch.ones(1, 1, 32, 32), DragLoop(n_steps=200, lr=0.02, lam=0.0))
    assert outcome.stopped == "reached" and outcome.distances[0] == 12.0
    assert float((outcome.handles - targets).norm()) < 2
    peak = outcome.variable[0, 0, 12, 18:21].max()
    assert peak > 0.9 and float(features[0, 0, 12, 18:21].max()) < 0.1  # the bump now reaches the target


def test_mask_regulariser_sums_or_averages_outside_the_mask():
    a, b = torch.ones(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)
    editable = torch.zeros(1, 1, 4, 4)
    editable[..., :2, :] = 1
    assert float(mask_regulariser(a, b, editable)) == 32.0
    assert float(mask_regulariser(a, b, editable, "mean")) == 0.5


def test_mask_regulariser_keeps_unmasked_latents_near_the_original(tiny_models, lora_cache):
    from methods.dragdiffusion import DragDiffusion

    mask = np.zeros((96, 96), bool)
    mask[8:44, 8:56] = True
    sample = square_sample(96, mask=mask)
    deviation = {}
    method = DragDiffusion.build(dict(lora_steps=0, steps=10))
    method.setup(tiny_models)
    problem = method.prepare(sample, sample.prompt)
    keep = 1 - problem.editable
    for lam in (0.0, 0.1):
        outcome, _ = method.drag_at_start(problem, DragLoop(n_steps=6, lr=0.01, lam=lam))
        deviation[lam] = float(((outcome.variable - problem.latent).abs() * keep).sum() / keep.sum())
    assert deviation[0.0] > 0 and deviation[0.1] < 0.5 * deviation[0.0]


# ------------------------------------------------------------------------------ attention and features


def test_mutual_self_attention_for_one_reference_edited_pair(tiny_models):
    """MasaCtrl as the drag methods use it (guidance 1, groups=1): the reference branch is untouched, the
    edited one attends to the reference's K/V from `start_step` on."""
    unet = tiny_models.unet
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    text = torch.randn(2, 77, 32, generator=gen)
    eps = lambda latents, cond: unet(latents, 500, encoder_hidden_states=cond).sample
    with torch.no_grad():
        alone = [eps(x[:1], text[:1]), eps(x[1:], text[1:])]
        control = MutualSelfAttention(start_step=1, start_layer=10, groups=1)
        with controlled_attention(unet, control):
            control.step = 0  # before start_step: plain attention
            torch.testing.assert_close(eps(x, text)[1:], alone[1], atol=1e-5, rtol=1e-5)
            control.step = 1
            mutual = eps(x, text)
        torch.testing.assert_close(mutual[:1], alone[0], atol=1e-5, rtol=1e-5)
        assert (mutual[1:] - alone[1]).abs().max() > 1e-4


def test_block_tap_captures_and_replaces(tiny_models):
    unet = tiny_models.unet
    x, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad(), BlockTap(unet, "up_blocks.2") as up, BlockTap(unet, "mid_block") as mid:
        base = unet(x, 300, encoder_hidden_states=text).sample
        assert up.output.shape == (1, 32, 8, 8) and mid.output.shape == (1, 64, 1, 1)
        mid.replacement = mid.output.clone()
        torch.testing.assert_close(unet(x, 300, encoder_hidden_states=text).sample, base)
        mid.replacement = torch.zeros_like(mid.output)
        assert (unet(x, 300, encoder_hidden_states=text).sample - base).abs().max() > 1e-4
    assert not unet.mid_block._forward_hooks
    with pytest.raises(ValueError, match="no block"):
        BlockTap(unet, "up_blocks.9")


# ------------------------------------------------------------------------------------------------ LoRA


def test_lora_fit_attach_detach(tiny_models):
    unet, image = tiny_models.unet, square_sample().image
    x, text = torch.randn(1, 4, 8, 8), tiny_models.encode_prompt("a red square")
    eps = lambda: unet(x, 400, encoder_hidden_states=text).sample
    with torch.no_grad():
        before = eps()
    spec = LoraSpec(rank=4, steps=3, lr=1e-2, batch_size=2, resolution=32)
    state = fit_lora(tiny_models, tiny_models.vae, image, "a red square", spec)
    assert not hasattr(unet, "peft_config") and not any(p.requires_grad for p in unet.parameters())
    assert len(state) == 4 * 2 * 32 and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in state)
    assert any(float(v.abs().max()) > 0 for k, v in state.items() if "lora_B" in k)  # trained up-projections
    again = fit_lora(tiny_models, tiny_models.vae, image, "a red square", spec)
    assert all(torch.equal(state[k], again[k]) for k in state)  # seeded
    from harness.diffusion.lora import LoraWeights

    with torch.no_grad():
        with use_lora(unet, LoraWeights(state, 4, 0.0, "off")):
            assert any(ADAPTER in n for n, _ in unet.named_parameters())
            assert (eps() - before).abs().max() > 0
        torch.testing.assert_close(eps(), before)
    assert not hasattr(unet, "peft_config")


@pytest.mark.parametrize("augment", ["once", "none"])
def test_lora_augment_modes_run(tiny_models, augment):
    spec = LoraSpec(rank=2, steps=1, batch_size=2, augment=augment, resolution=32)
    state = fit_lora(tiny_models, tiny_models.vae, square_sample(48).image, "", spec)
    assert state and not hasattr(tiny_models.unet, "peft_config")


def test_lora_cache_hit(tiny_models, lora_cache):
    image = square_sample().image
    spec = LoraSpec(rank=2, steps=2, batch_size=1, resolution=64)
    first = lora_for_image(tiny_models, tiny_models.vae, "model", image, "p", spec)
    second = lora_for_image(tiny_models, tiny_models.vae, "model", image, "p", spec)
    assert (first.cache, second.cache) == ("miss", "hit") and first.seconds > 0 and second.seconds == 0
    assert first.key == second.key and all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    assert len(list(lora_cache.glob("*.safetensors"))) == 1
    other = lora_for_image(tiny_models, tiny_models.vae, "model", image, "another prompt", spec)
    assert other.cache == "miss" and other.key != first.key
    off = lora_for_image(tiny_models, tiny_models.vae, "model", image, "p", spec, use_cache=False)
    assert off.cache == "off" and off.seconds > 0
    assert lora_for_image(tiny_models, tiny_models.vae, "model", image, "p", LoraSpec(steps=0)).cache == "none"
