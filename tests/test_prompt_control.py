"""Attention control for prompt editing: token alignment, the P2P controller, LocalBlend, MasaCtrl, and the
controlled attention processor, each against an independent computation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.diffusion.attention import transformer_blocks
from harness.diffusion.attention_control import (AttentionController, ControlledAttnProcessor, CrossAttentionRecorder,
                                                 MutualSelfAttention, controlled_attention)
from harness.models.tokenizer import clip_tokenizer
from harness.prompt.p2p_control import (BLEND_BLOCKS, LocalBlend, P2PController, refinement_mapper,
                                        replacement_mapper, token_weights, word_token_indices)


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


def per_word_positions(prompt: str, tokenizer) -> list[list[int]]:
    """Token positions of each space-separated word, by tokenising the words one at a time."""
    out, position = [], 1
    for word in prompt.split(" "):
        n = len(tokenizer(word, add_special_tokens=False).input_ids)
        out.append(list(range(position, position + n)))
        position += n
    return out


@pytest.mark.parametrize("prompt, word", [
    ("a slanted mountain bicycle on the road in front of a building", "bicycle"),
    ("a slanted rusty mountain bicycle on the road", "rusty"),
    ("a cat, a dog and a cat", "cat"),
    ("photo of a watercolor painting of a lighthouse", "lighthouse"),
])
def test_word_token_indices_match_per_word_tokenisation(tokenizer, prompt, word):
    spans = per_word_positions(prompt, tokenizer)
    expected = [p for w, span in zip(prompt.split(" "), spans) if w == word for p in span]
    assert word_token_indices(prompt, word, tokenizer) == expected
    assert word_token_indices(prompt, "absent", tokenizer) == []
    assert word_token_indices(prompt, 1, tokenizer) == spans[1]


def test_refinement_mapper_on_an_insertion(tokenizer):
    mapper, alphas = refinement_mapper("a cat", "a black cat", tokenizer)
    # target tokens [<s>, a, black, cat, </s>] read source tokens [<s>, a, −, cat, </s>]; padding maps to itself
    assert mapper[:5].tolist() == [0, 1, -1, 2, 3]
    assert mapper[5:].tolist() == list(range(5, 77))
    assert alphas[:5].tolist() == [1, 1, 0, 1, 1] and bool((alphas[5:] == 1).all())


def test_refinement_mapper_of_identical_prompts_is_the_identity(tokenizer):
    mapper, alphas = refinement_mapper("a photo of a dog", "a photo of a dog", tokenizer)
    assert mapper.tolist() == list(range(77)) and bool((alphas == 1).all())


def test_replacement_mapper(tokenizer):
    assert torch.equal(replacement_mapper("a cat sitting", "a dog sitting", tokenizer), torch.eye(77))
    with pytest.raises(ValueError, match="same number of words"):
        replacement_mapper("a cat", "a black cat", tokenizer)


def test_equalizer_weights(tokenizer):
    weights = token_weights("a black cat", "black", 2.0, tokenizer)
    assert weights[2] == 2 and float(weights.sum()) == 77 + 1


def synthetic_probs(n_tokens: int, heads: int = 2, keys: int = 77, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, heads, n_tokens, keys, generator=g).softmax(-1)


def test_p2p_controller_cross_and_self_attention_edits():
    mapper = torch.tensor([0, 1, -1, 2, 3] + list(range(5, 77)))
    alphas = torch.ones(77)
    alphas[2] = 0
    equalizer = torch.ones(77)
    equalizer[3] = 2.0
    c = P2PController(cross_steps=2, self_steps=3, refine=(mapper, alphas), equalizer=equalizer)
    probs = synthetic_probs(16)
    c.step = 0
    out = c.edit_probs(block=0, is_cross=True, probs=probs.clone())
    assert torch.equal(out[:3], probs[:3])  # unconditional rows and the source branch are untouched
    expected = (probs[2][:, :, mapper] * alphas + probs[3] * (1 - alphas)) * equalizer
    torch.testing.assert_close(out[3], expected)
    c.step = 2  # past cross_replace: the target keeps its own cross-attention
    assert not c.needs_probs(0, True)
    # self-attention: replaced in blocks 2–12 while step < self_steps
    self_probs = synthetic_probs(16, keys=16)
    out = c.edit_probs(block=5, is_cross=False, probs=self_probs.clone())
    assert torch.equal(out[3], self_probs[2]) and torch.equal(out[:3], self_probs[:3])
    assert c.needs_probs(5, False) and not c.needs_probs(0, False) and not c.needs_probs(13, False)
    c.step = 3
    assert not c.needs_probs(5, False)


def test_p2p_replace_controller_uses_the_word_map():
    matrix = torch.eye(77)[torch.randperm(77, generator=torch.Generator().manual_seed(1))]
    c = P2PController(cross_steps=5, self_steps=0, replace=matrix)
    probs = synthetic_probs(4)
    out = c.edit_probs(block=1, is_cross=True, probs=probs.clone())
    torch.testing.assert_close(out[3], probs[2] @ matrix)


def test_local_blend_mask_from_word_attention():
    """The source word attends to cell (0, 0) of a 4×4 map, the target word to cell (3, 3): after the 3×3
    max-pool and nearest upsampling to the 16×16 latent, the target keeps the union of the two 8×8 corners,
    the rest comes from the source."""
    latent_hw, h = (16, 16), 4
    selectors = torch.zeros(2, 77)
    selectors[0, 2] = selectors[1, 3] = 1
    blend = LocalBlend(selectors, latent_hw, start_step=1, threshold=0.3)
    maps = torch.full((2, 3, h * h, 77), 1e-3)
    maps[0, :, 0, 2] = 1.0  # cell (0, 0); the max-pool spreads it to rows/cols 0–1
    maps[1, :, h * h - 1, 3] = 1.0  # cell (3, 3) → rows/cols 2–3
    for block in sorted(BLEND_BLOCKS):
        blend.store(block, maps)
    x = torch.stack([torch.zeros(4, *latent_hw), torch.ones(4, *latent_hw)])
    assert torch.equal(blend(x, step=0), x)  # before start_step
    out = blend(x, step=1)
    assert torch.equal(out[0], x[0])
    expected = torch.zeros(latent_hw)
    expected[:8, :8] = expected[8:, 8:] = 1
    assert torch.equal(out[1, 0], expected)


def test_mutual_self_attention_equals_masactrl_target_queries_over_source_tokens():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, 9, 8, generator=g) for _ in range(3))  # rows u_src, u_tgt, c_src, c_tgt
    c = MutualSelfAttention(start_step=1, start_layer=10, groups=2)
    c.step = 1
    q2, k2, v2 = c.edit_qkv(12, False, q, k, v)
    out = F.scaled_dot_product_attention(q2, k2, v2)
    for src, tgt in ((0, 1), (2, 3)):
        probs = (q[tgt] @ k[src].transpose(-1, -2) / 8 ** 0.5).softmax(-1)  # MasaCtrl attn_batch
        torch.testing.assert_close(out[tgt], probs @ v[src])
        torch.testing.assert_close(out[src], F.scaled_dot_product_attention(q[src], k[src], v[src]))
    assert c.edit_qkv(9, False, q, k, v)[1] is k  # below start_layer
    c.step = 0
    assert c.edit_qkv(12, False, q, k, v)[1] is k  # before start_step
    assert c.edit_qkv(12, True, q, k, v)[1] is k  # cross-attention untouched


class Explicit(AttentionController):
    def needs_probs(self, block, is_cross):
        return True


def test_controlled_processor_matches_diffusers_and_restores(tiny_models):
    unet = tiny_models.unet
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        reference = unet(x, 500, encoder_hidden_states=ctx).sample
        for controller in (AttentionController(), Explicit()):
            with controlled_attention(unet, controller):
                assert isinstance(transformer_blocks(unet)[0].attn1.processor, ControlledAttnProcessor)
                torch.testing.assert_close(unet(x, 500, encoder_hidden_states=ctx).sample, reference,
                                           atol=1e-5, rtol=1e-4)
    assert not isinstance(transformer_blocks(unet)[0].attn1.processor, ControlledAttnProcessor)


def test_value_context_changes_only_the_cross_attention_values(tiny_models):
    """StyleDiffusion's hook: `value_context` feeds `to_v` of every cross-attention; the attention maps (queries
    and keys) stay those of the text, and passing the text itself changes nothing."""
    unet = tiny_models.unet
    g = torch.Generator().manual_seed(0)
    x, ctx, other = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
    recorder = CrossAttentionRecorder(frozenset({0}))  # the first cross-attention sees no earlier values
    with torch.no_grad(), controlled_attention(unet, recorder):
        plain = unet(x, 500, encoder_hidden_states=ctx).sample
        plain_map = recorder.maps.pop()
        same = unet(x, 500, encoder_hidden_states=ctx, cross_attention_kwargs={"value_context": ctx}).sample
        recorder.maps.clear()
        moved = unet(x, 500, encoder_hidden_states=ctx, cross_attention_kwargs={"value_context": other}).sample
        assert torch.equal(recorder.maps.pop(), plain_map)
    assert torch.equal(same, plain) and not torch.allclose(moved, plain)
