"""DDIM arithmetic and the five inversions on the tiny model: Direct Inversion's exact source branch,
null-text's and StyleDiffusion's falling inner losses, negative-prompt's unconditional embedding,
StyleDiffusion's mapping network, schedule and value plumbing."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness.diffusion.attention_control import AttentionController, MutualSelfAttention
from harness.diffusion.ddim_inversion import DDIMSchedule, ddim_invert
from harness.prompt import image_tokens
from harness.prompt.inversion import Conditioning, Inverted, NullTextSettings, direct_offsets, invert
from harness.prompt.sampler import sample_branches
from harness.prompt.style_diffusion import MappingNetwork, StyleInputs, StyleSettings, ValueModulation, inner_iterations
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
    inverted = method.invert(latent, cond, sample.image, 1234)
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


def test_null_text_inversion_lowers_each_steps_inner_loss(tiny_models, p2p_inputs, one_thread):
    """What the optimisation guarantees on any weights: within each step, Adam with a small learning rate does
    not raise the loss it descends (first iteration vs last). Whether the whole guided trajectory then beats
    DDIM's reconstruction error is not guaranteed with random weights and three iterations (it depended on
    the CPU's kernels), so it is not asserted."""
    _, method, latent, cond = p2p_inputs
    schedule = DDIMSchedule.p2p(2)
    null_before = cond.null.clone()
    null_text = invert("null_text", method.eps, schedule, latent, cond, 7.5, NullTextSettings(inner_steps=3, lr=1e-3))
    assert null_text.info["null_text_iterations"] == [3, 3]
    losses = null_text.info["null_text_loss"]
    assert [len(step) for step in losses] == [3, 3]
    assert all(step[-1] <= step[0] for step in losses), losses
    assert torch.equal(cond.null, null_before)  # optimised on a copy
    first, second = null_text.uncond
    assert not torch.equal(first, cond.null) and first.dtype == cond.null.dtype
    assert first.data_ptr() != second.data_ptr()  # per-step snapshots (the last step, t = 0 → clean, has no gradient)


def test_null_text_early_stop_and_negative_prompt(tiny_models, p2p_inputs):
    _, method, latent, cond = p2p_inputs
    schedule = DDIMSchedule.p2p(2)
    stopped = invert("null_text", method.eps, schedule, latent, cond, 7.5, NullTextSettings(inner_steps=5, early_stop=1e9))
    assert stopped.info["null_text_iterations"] == [1, 1]  # the first loss is below the threshold
    assert [len(step) for step in stopped.info["null_text_loss"]] == [1, 1]
    negative = invert("negative_prompt", method.eps, schedule, latent, cond, 7.5)
    assert all(u is cond.source for u in negative.uncond) and not negative.hold_source
    with pytest.raises(ValueError, match="unknown inversion"):
        invert("edict", method.eps, schedule, latent, cond, 7.5)


def test_conditioning_is_bracket_free(p2p_inputs):
    sample, method, _, cond = p2p_inputs
    assert torch.equal(cond.source, method.models.encode_prompt("a red ball on a table"))
    assert isinstance(cond, Conditioning)



def style_inputs(tiny_models, sample, **settings) -> StyleInputs:
    encoder, identity = image_tokens.build_encoder("random_tiny", "cpu")
    tokens = image_tokens.image_tokens(encoder, sample.image)
    assert tokens.shape == (1, 197, 32) and tokens.dtype == torch.float32  # ViT-B/16 grid, all tokens
    return StyleInputs(tiny_models.unet, tokens, StyleSettings(**settings), identity)


def test_style_diffusion_mapping_network():
    tokens = torch.randn(1, 197, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    network = MappingNetwork(197)
    scale, shift = network(tokens)
    assert scale.shape == shift.shape == (1, 77, 32)
    # the reference never leaves training mode: BatchNorm always uses the statistics of its one input
    assert torch.equal(network.eval()(tokens)[0], scale)
    assert [inner_iterations(100, i) for i in (0, 1, 10, 49)] == [100, 91, 37, 1]


def test_style_diffusion_optimisation_lowers_its_loss(tiny_models, p2p_inputs, one_thread):
    sample, method, latent, cond = p2p_inputs
    schedule = DDIMSchedule.p2p(2)
    style = style_inputs(tiny_models, sample, inner_steps=5, lr=1e-3)
    inverted = invert("style_diffusion", method.eps, schedule, latent, cond, 7.5, style)
    info = inverted.info
    assert info["style_diffusion_iterations"] == [5, math.ceil(5 * math.exp(-0.1))]
    first, last = info["style_diffusion_loss"][0]
    assert last < first  # the loss before the last update is below the un-optimised network's
    assert inverted.values.target_steps == 1 and len(inverted.values.affine) == 2
    assert all(u is cond.null for u in inverted.uncond) and not inverted.hold_source
    # recording the attention maps does not change the DDIM inversion itself
    plain = ddim_invert(lambda x, t: method.eps(x, t, cond.source), latent, schedule)
    for ours, theirs in zip(inverted.latents, plain):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    start = invert("style_diffusion", method.eps, schedule, latent, cond, 7.5,
                   style_inputs(tiny_models, sample, inner_steps=0))
    assert start.info["style_diffusion_iterations"] == [0, 0] and start.info["style_diffusion_loss"] == [[], []]


def test_style_diffusion_early_stop_and_missing_inputs(tiny_models, p2p_inputs):
    sample, method, latent, cond = p2p_inputs
    schedule = DDIMSchedule.p2p(2)
    stopped = invert("style_diffusion", method.eps, schedule, latent, cond, 7.5,
                     style_inputs(tiny_models, sample, inner_steps=5, early_stop=1e9))
    assert stopped.info["style_diffusion_iterations"] == [1, 1]
    with pytest.raises(ValueError, match="needs the image tokens"):
        invert("style_diffusion", method.eps, schedule, latent, cond, 7.5)


def test_value_modulation_rows_and_sampler_plumbing(tiny_models, p2p_inputs):
    _, method, latent, cond = p2p_inputs
    g = torch.Generator().manual_seed(0)
    scale, shift = torch.rand(1, 77, 32, generator=g) + 0.5, torch.randn(1, 77, 32, generator=g)
    modulation = ValueModulation([(scale, shift)] * 3, target_steps=1)
    contexts = torch.cat([cond.source, cond.target])
    early, late = modulation.apply(0, contexts), modulation.apply(1, contexts)
    torch.testing.assert_close(early, contexts * scale + shift)
    assert torch.equal(late[0], early[0]) and torch.equal(late[1], contexts[1])  # the edit branch stops at τ_v
    # identity values change nothing in the sampler; others do
    inverted = invert("ddim", method.eps, method.schedule, latent, cond, 7.5)
    identity = ValueModulation([(torch.ones(1, 77, 32), torch.zeros(1, 77, 32))] * 3, target_steps=3)
    runs = [sample_branches(tiny_models.unet, method.schedule, dataclasses.replace(inverted, values=v), contexts, 7.5,
                            AttentionController()).latents for v in (None, identity, modulation)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])
    assert isinstance(inverted, Inverted)
