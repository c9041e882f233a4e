"""DragLoRA's pieces (harness.diffusion.online_lora, lora_pair, kv_bank) on fixed tensors.

Parity with the release (Sylvie-X/DragLoRA @4276544, functions extracted from the fetched files and run
beside ours on the CPU with the tiny random UNet, seed 42; not committed): `point_tracking` 80 cases
(distance and angle regions) identical handles and minD; `interpolate_feature_patch` 30 cases, max |Δ| 0;
`drag_diffusion_update` (all three loss terms, mode logic, ILFA, RNG order) for 14 loss steps, same
handles every step, final latent max |Δ| 3e-7; `dup_generation` one step 1.6e-7, 35 steps from the same
latent ≤ 3e-3 (fp32 rounding amplified by the random-weight UNet). The tests below pin the released
behaviour without the reference.
"""
from __future__ import annotations

import pytest
import torch

from harness.diffusion.drag import bilinear_sample
from harness.diffusion.online_lora import (ModeSwitch, dds_loss, dds_target, drag_loss, fixed_patches, ilfa,
                                           interpolate_patch, track_closer)


def test_interpolate_patch_is_bilinear_sampling_inside_the_map():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(1, 3, 9, 9, generator=g)
    y1, x1 = torch.tensor(3.3), torch.tensor(2.6)
    patch = interpolate_patch(feat, y1, y1 + 3, x1, x1 + 3)
    gy, gx = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
    expected = bilinear_sample(feat, torch.stack([x1 + gx, y1 + gy], dim=-1))
    assert torch.allclose(patch[0], expected, atol=1e-6)


def test_tracking_only_considers_pixels_no_farther_from_the_target():
    reference = torch.zeros(1, 2, 10, 10)
    reference[0, :, 5, 5] = 1.0  # the handle's feature
    features = torch.zeros(1, 2, 10, 10)
    features[0, :, 5, 3] = 1.0  # a perfect match, but farther from the target (x = 8)
    features[0, :, 5, 6] = 0.7  # the best match among the closer pixels
    handles = torch.tensor([[5.0, 5.0]])
    new, min_d = track_closer(reference, features, handles, handles, torch.tensor([[8.0, 5.0]]), 3)
    assert new.tolist() == [[6.0, 5.0]] and min_d == (0.3,)
    unrestricted, _ = track_closer(reference, features, handles, handles, torch.tensor([[0.0, 5.0]]), 3)
    assert unrestricted.tolist() == [[3.0, 5.0]]


def test_angle_region_skips_points_at_their_target():
    f = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    p = torch.tensor([[4.0, 4.0]])
    new, min_d = track_closer(f, f, p, p, torch.tensor([[4.5, 4.0]]), 3, region="angle")
    assert torch.equal(new, p) and min_d == ()
    with pytest.raises(ValueError, match="tracking region"):
        track_closer(f, f, p, p, p, 3, region="cone")


def test_drag_loss_uses_the_fixed_initial_patch_and_skips_reached_points():
    g = torch.Generator().manual_seed(2)
    f0, f1 = torch.randn(1, 4, 12, 12, generator=g), torch.randn(1, 4, 12, 12, generator=g)
    initial = torch.tensor([[4.0, 4.0], [8.0, 8.0]])
    patches = fixed_patches(f0, initial, 1)
    current, targets = torch.tensor([[5.0, 4.0], [8.0, 8.0]]), torch.tensor([[9.0, 4.0], [9.0, 8.0]])
    loss, expected = drag_loss(patches, f1, current, targets, 1)
    shifted = f1[:, :, 3:6, 5:8]  # one unit step in +x from the current handle: integer shift
    assert torch.allclose(loss, 9 * (f0[:, :, 3:6, 3:6] - shifted).abs().mean())
    assert expected.tolist() == [[6.0, 4.0], [9.0, 8.0]]  # the reached point expects its target


def test_dds_term_is_25_mse_towards_the_corrected_prediction():
    x0, e_ori, e_lora = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5), torch.zeros(1, 4, 2, 2)
    target = dds_target(x0, e_ori, e_lora, alpha_tau=0.75)
    assert torch.allclose(target, torch.full_like(x0, 1 - 0.25 * 0.5))
    assert float(dds_loss(x0, target, 50.0)) == pytest.approx(25 * 0.125 ** 2)


def test_mode_switch_reverts_three_times_then_keeps_the_tracked_points():
    switch = ModeSwitch()
    previous, tracked = torch.tensor([[1.0, 1.0], [5.0, 5.0]]), torch.tensor([[2.0, 1.0], [6.0, 5.0]])
    for expected_step in (2, 2, 2):
        handles, step = switch.update(3, (0.5, 1.5), tracked, previous, None)
        assert step == expected_step and handles.tolist() == [[2.0, 1.0], [5.0, 5.0]]  # only the unsure one
    handles, step = switch.update(3, (0.5, 1.5), tracked, previous, None)
    assert step == 3 and torch.equal(handles, tracked) and switch.retain == 0
    switch.retain = 2
    switch.update(3, (0.5, 1.0), tracked, previous, None)
    assert switch.retain == 0


def test_mode_switch_enters_and_leaves_the_only_ilfa_mode():
    switch = ModeSwitch()
    h = torch.tensor([[3.0, 3.0]])
    switch.update(10, (0.5,), h, h, h)  # step_idx must exceed 10
    assert not switch.ada
    switch.update(11, (0.5,), h, h, h + 2)  # too far from the expected positions
    assert not switch.ada
    switch.update(11, (0.5,), h, h, h + 0.5)
    assert switch.ada and switch.events == ["ilfa_only_on@11"]
    for _ in range(5):
        switch.update(11, (0.5,), h, h, None)
    assert switch.ada and switch.nomove == 5
    switch.update(11, (0.5,), h, h, None)
    assert not switch.ada and switch.nomove == 0
    switch.ada = True
    switch.update(11, (1.4,), h + 1, h, None)  # low confidence leaves the mode at once
    assert not switch.ada


def test_ilfa_renoises_inside_the_mask_and_does_nothing_with_an_empty_one():
    x_next, noise, original = torch.full((1, 1, 2, 2), 2.0), torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    out = ilfa(x_next, noise, torch.tensor(0.64), mask, original)
    assert out[0, 0, 0, 0] == pytest.approx(0.8 * 2 + 0.6) and float(out[0, 0, 1:].abs().sum()) == 0
    assert torch.equal(ilfa(x_next, noise, torch.tensor(0.64), torch.zeros_like(mask), original), original)


def test_kv_bank_replaces_or_concatenates_the_recorded_keys():
    from harness.diffusion.kv_bank import SelfAttentionBank

    bank = SelfAttentionBank(frozenset({3}), from_step=1)
    k, v, q = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4), torch.randn(2, 2, 5, 4)
    bank.step = 1
    bank.set_mode("record").edit_qkv(3, False, q[:1], k, v)
    assert bank.edit_qkv(2, False, q, q, q)[1] is q  # other blocks untouched
    _, k2, v2 = bank.set_mode("replace").edit_qkv(3, False, q, q, q)
    assert torch.equal(k2, k.expand(2, -1, -1, -1)) and torch.equal(v2, v.expand(2, -1, -1, -1))
    _, k3, _ = bank.set_mode("concat").edit_qkv(3, False, q, q, q)
    assert k3.shape == (2, 2, 10, 4) and torch.equal(k3[:, :, 5:], k.expand(2, -1, -1, -1))
    bank.step = 0
    assert bank.edit_qkv(3, False, q, q, q)[1] is q  # before from_step
    with pytest.raises(ValueError, match="mode"):
        bank.set_mode("swap")
