"""Pix2Pix-Zero's pieces against hand computations: the edit direction, the released inverse step and noise
regularisation, cross-attention guidance (weight 0 = plain guided sampling), Direct Inversion holding the
reference branch on the inversion trajectory, the BLIP base prompt and the seeded posterior sample."""
from __future__ import annotations

import random

import pytest
import torch

from harness.diffusion.attention_control import CrossAttentionRecorder, controlled_attention
from harness.diffusion.ddim_inversion import DDIMSchedule
from harness.prompt import captioner
from harness.registry import METHODS
from methods.pix2pix_zero import (NoiseRegularisation, autocorrelation_loss, cross_attention_guided_edit, edit_direction,
                                  guided, inverse_step, invert, kl_loss, regularise)
from tests.pie_fixtures import pie_sample



@pytest.fixture(scope="module")
def setup(tiny_models):
    method = METHODS.get("pix2pix_zero").build({"steps": 3, "prompt": "source"})
    method.setup(tiny_models)
    sample = pie_sample()
    latent = method.encode_image(sample)
    base = tiny_models.encode_prompt(sample.encode_source_prompt)
    latents = invert(lambda x, t: method.eps(x, t, base), method.schedule, latent, random.Random(0), NoiseRegularisation())
    return method, sample, latent, base, latents


def test_edit_direction_is_the_token_wise_embedding_difference(tiny_models):
    source, target = tiny_models.encode_prompt("a red ball on a table"), tiny_models.encode_prompt("a red apple on a table")
    direction = edit_direction(source, target)
    # the reference: load_sentence_embeddings (mean over a batch of one sentence), then .mean(0) of (1, 77, C)
    reference = (torch.cat([target]).mean(dim=0)[None].mean(0) - torch.cat([source]).mean(dim=0)[None].mean(0))[None]
    assert direction.shape == (1, 77, 32) and torch.equal(direction, reference)
    assert direction[0, :3].abs().max() == 0  # start token, "a", "red": same tokens, no direction
    assert direction[0, 3].abs().max() > 0  # "ball" → "apple"


def test_inverse_step_is_the_released_scheduler():
    s = DDIMSchedule.from_model_config({"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                                        "set_alpha_to_one": False, "steps_offset": 1, "num_train_timesteps": 1000}, 50)
    assert list(reversed(s.timesteps))[:2] == [1, 21] and s.timesteps[0] == 981
    x, zero = torch.ones(1, 4, 2, 2, dtype=torch.float64), torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    a = s.alphas_cumprod
    # with zero noise the step scales by sqrt(ᾱ_next / ᾱ_t): ᾱ[0] → ᾱ[20] at t = 1, ᾱ[960] → ᾱ[999] at t = 981
    torch.testing.assert_close(inverse_step(s, zero, 1, x), x * (a[20] / a[0]) ** 0.5)
    torch.testing.assert_close(inverse_step(s, zero, 981, x), x * (a[999] / a[980]) ** 0.5)


def test_noise_regularisation():
    eps = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.3
    off = NoiseRegularisation(lambda_ac=0, lambda_kl=0)
    assert torch.equal(regularise(eps, random.Random(0), off), eps)
    kl_only = regularise(eps, random.Random(0), NoiseRegularisation(lambda_ac=0, lambda_kl=0.01, steps=1))
    assert kl_loss(kl_only) < kl_loss(eps)
    a, b = (regularise(eps, random.Random(1234), NoiseRegularisation(steps=1)) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, eps)


class ZeroShifts(random.Random):
    """Records the `randrange` bounds and always rolls by 0."""

    def __init__(self) -> None:
        super().__init__(0)
        self.bounds: list[int] = []

    def randrange(self, n):
        self.bounds.append(n)
        return 0


def test_autocorrelation_loss_by_hand():
    noise = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rng = ZeroShifts()
    loss = autocorrelation_loss(noise, rng)
    # one offset per channel and pyramid level (32, 16, 8), drawn from half the side, in this order
    assert rng.bounds == [16, 8, 4] * 4
    expected = 0.0
    for channel in noise[0]:
        for level in (channel, torch.nn.functional.avg_pool2d(channel[None], 2)[0],
                      torch.nn.functional.avg_pool2d(channel[None], 4)[0]):
            expected += 2 * float((level * level).mean()) ** 2  # roll by 0 along each axis
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def plain_guided_sampling(unet, schedule, x, context, guidance):
    """Guided DDIM with the same attention processors, no cross-attention guidance."""
    with torch.no_grad(), controlled_attention(unet, CrossAttentionRecorder()):
        for t in schedule.timesteps:
            x = schedule.step(guided(unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample, guidance), t, x)
    return x


def test_guidance_weight_zero_is_plain_guided_sampling(tiny_models, setup, one_thread):
    method, sample, _, base, latents = setup
    target = tiny_models.encode_prompt(sample.encode_target_prompt)
    reference_context = torch.cat([base, base])
    edit_context = torch.cat([base, target])
    plain = plain_guided_sampling(tiny_models.unet, method.schedule, latents[-1], edit_context, 7.5)
    unguided = cross_attention_guided_edit(tiny_models.unet, method.schedule, latents, reference_context, edit_context,
                                           7.5, 0.0, hold_reference=False)
    assert torch.equal(unguided.latent, plain)
    guided_edit = cross_attention_guided_edit(tiny_models.unet, method.schedule, latents, reference_context, edit_context,
                                              7.5, 0.1, hold_reference=False)
    assert not torch.allclose(guided_edit.latent, plain)
    # the reference branch is plain guided sampling with the base prompt on both rows
    torch.testing.assert_close(unguided.reference_trajectory[-1],
                               plain_guided_sampling(tiny_models.unet, method.schedule, latents[-1], reference_context, 7.5))


def test_direct_inversion_holds_the_reference_branch_and_offsets_the_edit(tiny_models, setup, one_thread):
    method, _, latent, base, latents = setup
    n = method.schedule.steps
    context = torch.cat([base, base])
    held = cross_attention_guided_edit(tiny_models.unet, method.schedule, latents, context, context, 7.5, 0.0,
                                       hold_reference=True)
    for i, z in enumerate(held.reference_trajectory):
        torch.testing.assert_close(z, latents[n - i - 1], atol=1e-6, rtol=1e-6)
    # same prompts, no guidance: the edit branch gets the same offsets and lands on the input latent
    torch.testing.assert_close(held.latent, latent, atol=1e-5, rtol=1e-5)
    drifting = cross_attention_guided_edit(tiny_models.unet, method.schedule, latents, context, context, 7.5, 0.0,
                                           hold_reference=False)
    assert (drifting.latent - latent).abs().max() > 1e-2 and not drifting.offsets


def test_base_prompt_and_posterior_sample(tiny_models):
    sample = pie_sample()
    method = METHODS.get("pix2pix_zero").build({"steps": 2})
    method.setup(tiny_models)
    base, origin = method.base_prompt(sample)
    model, tokenizer, identity = captioner.build_captioner("random_tiny", "cpu")
    assert origin == identity and base == captioner.caption(model, tokenizer, sample.image) and base
    source = METHODS.get("pix2pix_zero").build({"steps": 2, "prompt": "source"})
    source.setup(tiny_models)
    assert source.base_prompt(sample) == ("a red ball on a table", "source prompt")
    draws = [method.encode_image(sample, torch.Generator().manual_seed(seed)) for seed in (1234, 1234, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0], method.encode_image(sample))  # a sample, not the posterior mean
