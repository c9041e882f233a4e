"""DDIM arithmetic and the four inversions on the tiny model: Direct Inversion's exact source branch,
null-text's lower reconstruction error, negative-prompt's unconditional embedding."""
from __future__ import annotations

import pytest
import torch

from harness.diffusion.attention_control import AttentionController, MutualSelfAttention
from harness.diffusion.ddim_inversion import DDIMSchedule, ddim_invert
from harness.prompt.inversion import Conditioning, NullTextSettings, direct_offsets, invert
from harness.prompt.sampler import sample_branches
from harness.registry import METHODS
from tests.pie_fixtures import pie_sample


def test_schedules_follow_the_reference_scripts(tiny_models):
    p2p = DDIMSchedule.p2p(50)
    assert p2p.timesteps[:2] == [980, 960] and p2p.timesteps[-1] == 0 and p2p.stride == 20
    assert p2p.alpha(-20) == p2p.final_alpha == pytest.approx(float(p2p.alphas_cumprod[0]))  # set_alpha_to_one=False
    pnp = DDIMSchedule.from_model_config(tiny_models.scheduler_config, 50)
    assert pnp.timesteps[:2] == [981, 961] and pnp.timesteps[-1] == 1


def test_step_inverts_inverse_for_a_fixed_noise():
    s = DDIMSchedule.p2p(10)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    for t in s.timesteps:
        torch.testing.assert_close(s.step(eps, t, s.inverse(eps, t, x)), x)


def test_ddim_invert_order():
    s = DDIMSchedule.p2p(4)
    seen = []
    latents = ddim_invert(lambda x, t: seen.append(t) or torch.zeros_like(x), torch.ones(1, 4, 2, 2), s)
    assert seen == [0, 250, 500, 750] and len(latents) == 5


@pytest.fixture(scope="module")
def p2p_inputs(tiny_models):
    sample = pie_sample()
    method = METHODS.get("p2p").build({"inversion": "direct", "steps": 3})
    method.setup(tiny_models)
    latent = method.encode_image(sample)
    cond = method.conditioning(sample.encode_source_prompt, sample.encode_target_prompt)
    return sample, method, latent, cond


def test_direct_inversion_source_branch_reconstructs_the_input_latent_exactly(tiny_models, p2p_inputs):
    sample, method, latent, cond = p2p_inputs
    inverted = method.invert(latent, cond)
    assert inverted.hold_source and all(u is cond.null for u in inverted.uncond)
    contexts = torch.cat([cond.source, cond.target])
    p2p = method.controller(sample, sample.encode_source_prompt, sample.encode_target_prompt, tuple(latent.shape[-2:]))
    for controller in (p2p, MutualSelfAttention(start_step=0, start_layer=0)):
        out = sample_branches(tiny_models.unet, method.schedule, inverted, contexts, 7.5, controller)
        for i, z in enumerate(out.source_trajectory):
            assert torch.equal(z, inverted.latents[method.schedule.steps - i - 1][0])
        assert torch.equal(out.latents[0], latent[0])
        assert not torch.equal(out.latents[1], latent[0])  # the edit branch is free
    # the sampler's per-step offsets are the reference's separate offset pass
    reference = direct_offsets(method.eps, method.schedule, inverted.latents, cond, 7.5)
    for ours, theirs in zip(out.source_offsets, reference):
        torch.testing.assert_close(ours, theirs[0], atol=1e-4, rtol=1e-4)
    # without Direct Inversion the guided reconstruction drifts
    ddim = invert("ddim", method.eps, method.schedule, latent, cond, 7.5)
    drift = sample_branches(tiny_models.unet, method.schedule, ddim, contexts, 7.5, AttentionController())
    assert (drift.latents[0] - latent[0]).abs().max() > 1e-2


def reconstruction_error(unet, schedule, inverted, cond, latent) -> float:
    out = sample_branches(unet, schedule, inverted, cond.source, 7.5, AttentionController())
    return float(((out.latents[0] - latent[0]) ** 2).mean())


def test_null_text_inversion_reduces_reconstruction_error_versus_ddim(tiny_models, p2p_inputs):
    _, method, latent, cond = p2p_inputs
    schedule = DDIMSchedule.p2p(2)
    null_before = cond.null.clone()
    ddim = invert("ddim", method.eps, schedule, latent, cond, 7.5)
    null_text = invert("null_text", method.eps, schedule, latent, cond, 7.5, NullTextSettings(inner_steps=3, lr=0.1))
    assert null_text.info["null_text_iterations"] == [3, 3]
    assert torch.equal(cond.null, null_before)  # optimised on a copy
    first, second = null_text.uncond
    assert not torch.equal(first, cond.null) and first.dtype == cond.null.dtype
    assert first.data_ptr() != second.data_ptr()  # per-step snapshots (the last step, t = 0 → clean, has no gradient)
    assert (reconstruction_error(tiny_models.unet, schedule, null_text, cond, latent)
            < reconstruction_error(tiny_models.unet, schedule, ddim, cond, latent))


def test_null_text_early_stop_and_negative_prompt(tiny_models, p2p_inputs):
    _, method, latent, cond = p2p_inputs
    schedule = DDIMSchedule.p2p(2)
    stopped = invert("null_text", method.eps, schedule, latent, cond, 7.5, NullTextSettings(inner_steps=5, early_stop=1e9))
    assert stopped.info["null_text_iterations"] == [1, 1]  # the first loss is below the threshold
    negative = invert("negative_prompt", method.eps, schedule, latent, cond, 7.5)
    assert all(u is cond.source for u in negative.uncond) and not negative.hold_source
    with pytest.raises(ValueError, match="unknown inversion"):
        invert("edict", method.eps, schedule, latent, cond, 7.5)


def test_conditioning_is_bracket_free(p2p_inputs):
    sample, method, _, cond = p2p_inputs
    assert torch.equal(cond.source, method.models.encode_prompt("a red ball on a table"))
    assert isinstance(cond, Conditioning)
