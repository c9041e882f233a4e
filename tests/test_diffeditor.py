"""DiffEditor / DragonDiffusion pieces (harness.diffusion.energy_guidance, image_prompt_bank, methods.diffeditor).

Parity with the release (MC-E/DragonDiffusion @f9b5bdf; its functions and attention processors run beside
ours on the CPU with shims for CUDA, xformers and basicsr, tiny random weights; not committed):
`process_drag` masks and in-place latent copy identical (60 random cases on non-square maps: 36 run, the
other 24 put a latent patch across the border and fail in both); `guidance_drag` gradient identical (max |Δ| 0 at t = 981, 681, 401,
with the plain UNet as estimator); the Resampler image prompt 4.8e-7; `Sampler.edit` teacher-forced
per step (the release's inputs, inversion trajectory and K/V bank), all 50 steps: relative max |Δ| ≤ 1.6e-6
for `D+` (guidance, regional SDE with the same noise stream, time travel, bank concat, image-prompt window)
and ≤ 1.9e-7 for `D`. Free-running, 1e-6 per UNet call (sdpa vs the release's 3-D attention) grows
through the random tiny UNet's 50-step inversion, so whole runs are compared step by step.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.diffusion.energy_guidance import (DragWeights, copy_latent_patches, drag_boxes, drag_energy,
                                               guidance_from_energy, upsampled)


def test_boxes_sit_at_a_quarter_of_the_points_and_clip_x_with_the_height():
    mask = torch.ones(64, 128)  # feature grid 16 × 32
    boxes = drag_boxes(mask, [(120.0, 10.0)], [(8.0, 60.0)])
    assert boxes.handle_centres == [(2, 14)]  # x 120//4 = 30, clipped to 16 − 2
    assert boxes.target_centres == [(14, 2)]
    assert int(boxes.handle[0].sum()) == 9 and bool(boxes.handle[0][1:4, 13:16].all())
    by_width = drag_boxes(mask, [(120.0, 10.0)], [(8.0, 60.0)], clip_x_by="width")
    assert by_width.handle_centres == [(2, 30)]
    assert not bool(boxes.other.any())  # everything editable
    with pytest.raises(ValueError, match="clip_x_by"):
        drag_boxes(mask, [], [], clip_x_by="diagonal")


def test_latent_patch_copy_moves_the_handle_patch_onto_the_target():
    mask = torch.ones(64, 64)
    boxes = drag_boxes(mask, [(20.0, 20.0)], [(44.0, 36.0)])  # feature (5, 5) → latent (2, 2); (9, 11) → (4, 5)
    latent = torch.arange(64.0).reshape(1, 1, 8, 8)
    out = copy_latent_patches(latent.clone(), boxes)
    assert torch.equal(out[0, 0, 3:6, 4:7], latent[0, 0, 1:4, 1:4])
    assert torch.equal(out[0, 0, :3], latent[0, 0, :3])
    edge = drag_boxes(mask, [(20.0, 20.0)], [(60.0, 60.0)])  # target centre (14, 14) → latent (7, 7): the last cell
    with pytest.raises(ValueError, match="latent_patch_border=clamp"):
        copy_latent_patches(latent.clone(), edge)
    clamped = copy_latent_patches(latent.clone(), edge, border="clamp")
    assert torch.equal(clamped[0, 0, 5:8, 5:8], latent[0, 0, 1:4, 1:4])


def test_energy_is_minimal_where_features_agree_and_the_inpaint_term_pushes_away():
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    boxes = drag_boxes(mask, [(12.0, 12.0)], [(20.0, 12.0)])  # boxes at columns 2–4 and 4–6: one column shared
    feats = [torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))]
    weights = DragWeights(4.0, 6.0, 0.2)
    loss_edit, loss_con = drag_energy(feats, feats, boxes, weights)
    assert float(loss_con) == pytest.approx(6.0 / 5.0)  # sim 1 everywhere outside the mask
    target_sim = ((torch.nn.functional.cosine_similarity(feats[0][0][:, boxes.target[0]],
                                                         feats[0][0][:, boxes.handle[0]], dim=0) + 1) / 2).mean()
    assert float(loss_edit) == pytest.approx(float(4.0 / (1 + 4 * target_sim) + 0.2), rel=1e-5)


def test_guidance_splits_the_two_gradients_by_the_mask():
    latent = torch.zeros(1, 1, 2, 2, requires_grad=True)
    edit, con = (latent * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)).sum(), (latent * 10).sum()
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    g = guidance_from_energy(latent, (edit, con), mask, energy_scale=100.0)
    assert g.flatten().tolist() == pytest.approx([4.0, 40.0, 40.0, 40.0])


def test_features_upsample_to_twice_the_last_level():
    out = upsampled([torch.ones(1, 2, 4, 4), torch.ones(1, 3, 8, 8)])
    assert [tuple(f.shape) for f in out] == [(1, 2, 16, 16), (1, 3, 16, 16)]


def test_resize_keeps_the_area_in_multiples_of_64_and_the_config_checks_its_switches():
    from methods.diffeditor import DiffEditorConfig, DragonDiffusionConfig, resize_to_area

    image, sx, sy = resize_to_area(np.zeros((512, 384, 3), np.uint8), 768)
    assert image.shape[:2] == (896, 640) and sx == pytest.approx(640 / 384) and sy == pytest.approx(896 / 512)
    assert DragonDiffusionConfig().alg == "D" and DiffEditorConfig().alg == "D+"
    with pytest.raises(ValueError, match="alg"):
        DiffEditorConfig(alg="E")


def test_fast_resolution_only_on_the_tiny_models():
    from types import SimpleNamespace

    from methods.diffeditor import FAST_RESOLUTION, DiffEditor

    tiny, full = SimpleNamespace(source="random", arch="tiny"), SimpleNamespace(source="random", arch="sd15")
    fast = DiffEditor.for_model({"resolution": 768}, tiny)[0]
    assert fast["resolution"] == FAST_RESOLUTION and fast["latent_patch_border"] == "clamp"
    assert DiffEditor.for_model({"resolution": 768}, full) == ({"resolution": 768}, None)
    kept = DiffEditor.for_model({"resolution": 768, "resolution_profile": "published"}, tiny)[0]
    assert kept["resolution"] == 768


def test_image_prompt_term_is_added_only_while_its_scale_is_set(tiny_models):
    from harness.diffusion.image_prompt_bank import ImagePromptBank, image_tokens, ip_layers_by_block
    from harness.models.components import load_component

    adapter = load_component("diffeditor_ip_sd15", tiny_models)
    tokens = image_tokens(adapter, np.full((256, 256, 3), 128, np.uint8))
    assert tokens.shape == (2, 64, tiny_models.unet.config.cross_attention_dim)
    control = ImagePromptBank(frozenset(), ip_layers_by_block(tiny_models.unet, adapter))
    q = torch.randn(2, 8, 5, 4)
    assert control.extra_attention(0, True, q) is None
    control.ip_tokens, control.ip_scale = tokens, 0.1
    assert control.extra_attention(0, False, q) is None  # self-attention untouched
    assert control.extra_attention(0, True, q).shape == q.shape
