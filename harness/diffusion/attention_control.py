"""Attention control through diffusers attention processors.

Prompt-to-Prompt edits attention *probabilities*, MasaCtrl and Plug-and-Play edit *queries, keys and
values*; all three do it per transformer block and per denoising step. One processor serves them all:
`ControlledAttnProcessor` computes q, k, v, hands them to the controller (`edit_qkv`), and only when the
controller asks for the probabilities of this call (`needs_probs`) computes softmax(q·kᵀ·scale)
explicitly and hands it over (`edit_probs`); otherwise it uses `scaled_dot_product_attention`.
`CrossAttentionRecorder` only reads them (StyleDiffusion's and Pix2Pix-Zero's attention losses).

Tensors reach the controller as (batch, heads, tokens, head_dim) and (batch, heads, queries, keys), so a
controller indexes batch rows (branches, guidance halves) directly. The block index is the transformer
block's position in execution order (`transformer_blocks`: down 0–5, mid 6, up 7–15), the layer numbering
MasaCtrl's `start_layer` and PnP's injection layers use. The sampling loop sets `controller.step` before
each UNet call, so controllers never count calls.

A UNet call can pass `cross_attention_kwargs={"value_context": ctx}`: every cross-attention then computes
its values from `ctx` (same shape as `encoder_hidden_states`) while queries and keys still see the text.
StyleDiffusion feeds its image-mapped embedding to the values this way; diffusers hands the keyword to
every attention processor of the call, so it is a named parameter of the processor (diffusers drops
keywords a processor does not name).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

from harness.diffusion.attention import transformer_blocks


class AttentionController:
    """Identity control; subclasses override what they change."""

    step: int = 0

    def edit_qkv(self, block: int, is_cross: bool, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return q, k, v

    def needs_probs(self, block: int, is_cross: bool) -> bool:
        return False

    def edit_probs(self, block: int, is_cross: bool, probs: torch.Tensor) -> torch.Tensor:
        return probs

    def extra_attention(self, block: int, is_cross: bool, q: torch.Tensor) -> torch.Tensor | None:
        """A term added to the attention output, (batch, heads, queries, head_dim), before the output
        projection: an image prompt's decoupled cross-attention (DiffEditor's IP-Adapter branch)."""
        return None

    def step_callback(self, latents: torch.Tensor) -> torch.Tensor:
        """Called on the latents after each denoising step (Prompt-to-Prompt's LocalBlend)."""
        return latents


class ControlledAttnProcessor:
    """A diffusers attention processor for SD transformer blocks that defers to a controller."""

    def __init__(self, controller: AttentionController, block: int, is_cross: bool) -> None:
        self.controller, self.block, self.is_cross = controller, block, is_cross

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 value_context: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if attention_mask is not None or attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3:
            raise NotImplementedError("ControlledAttnProcessor supports the SD transformer-block attention only "
                                      "(3-D tokens, no masks, no spatial or group norm)")
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        values_from = context if encoder_hidden_states is None or value_context is None else value_context
        if encoder_hidden_states is not None and attn.norm_cross:
            context, values_from = attn.norm_encoder_hidden_states(context), attn.norm_encoder_hidden_states(values_from)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        q, k, v = heads(attn.to_q(hidden_states)), heads(attn.to_k(context)), heads(attn.to_v(values_from))
        c = self.controller
        q, k, v = c.edit_qkv(self.block, self.is_cross, q, k, v)
        if c.needs_probs(self.block, self.is_cross):
            probs = (q @ k.transpose(-1, -2) * attn.scale).float().softmax(dim=-1).to(q.dtype)
            out = c.edit_probs(self.block, self.is_cross, probs) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        extra = c.extra_attention(self.block, self.is_cross, q)
        if extra is not None:
            out = out + extra
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * q.shape[-1]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


# UNets with a controller installed now (id → count of nested blocks): a CUDA-graph replay would freeze the
# controller's per-call Python logic, so `GraphedUNet` runs such a UNet eagerly.
_CONTROLLED: dict[int, int] = {}


def is_controlled(unet) -> bool:
    """Whether `controlled_attention` is active on `unet`."""
    return _CONTROLLED.get(id(unet), 0) > 0


@contextlib.contextmanager
def controlled_attention(unet, controller: AttentionController) -> Iterator[AttentionController]:
    """Route every self- and cross-attention of the UNet's transformer blocks through `controller` inside
    the block; the previous processors are restored afterwards (also on errors)."""
    saved = []
    for index, block in enumerate(transformer_blocks(unet)):
        for attn, is_cross in ((block.attn1, False), (block.attn2, True)):
            saved.append((attn, attn.processor))
            attn.set_processor(ControlledAttnProcessor(controller, index, is_cross))
    _CONTROLLED[id(unet)] = _CONTROLLED.get(id(unet), 0) + 1
    try:
        yield controller
    finally:
        _CONTROLLED[id(unet)] -= 1
        if not _CONTROLLED[id(unet)]:
            del _CONTROLLED[id(unet)]
        for attn, processor in saved:
            attn.set_processor(processor)


class CrossAttentionRecorder(AttentionController):
    """Keeps the cross-attention probabilities of one UNet call, in execution order, for the transformer
    blocks in `blocks` (all when None), without changing them. Under autograd the maps keep their history:
    StyleDiffusion and Pix2Pix-Zero differentiate losses on them. The caller empties `maps` before a call."""

    def __init__(self, blocks: frozenset[int] | None = None) -> None:
        self.blocks = blocks
        self.maps: list[torch.Tensor] = []

    def needs_probs(self, block: int, is_cross: bool) -> bool:
        return is_cross and (self.blocks is None or block in self.blocks)

    def edit_probs(self, block: int, is_cross: bool, probs: torch.Tensor) -> torch.Tensor:
        self.maps.append(probs)
        return probs


class MutualSelfAttention(AttentionController):
    """MasaCtrl's mutual self-attention (Cao et al. 2023): from step `start_step` on, in transformer blocks
    ≥ `start_layer`, the self-attention of every branch queries the *source* branch's keys and values.

    The batch is `groups` consecutive chunks (classifier-free-guidance halves; 1 without guidance), each
    holding the branches in order with the source first. Replacing a branch's K/V by the source's is the
    same computation as MasaCtrl's `attn_batch` (target queries attend over source tokens); the source
    branch attends to itself as usual.
    """

    def __init__(self, start_step: int = 4, start_layer: int = 10, groups: int = 2) -> None:
        self.start_step, self.start_layer, self.groups = start_step, start_layer, groups

    def edit_qkv(self, block, is_cross, q, k, v):
        if is_cross or self.step < self.start_step or block < self.start_layer:
            return q, k, v
        return q, _from_group_source(k, self.groups), _from_group_source(v, self.groups)


def _from_group_source(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Every row replaced by the first row of its group (groups of equal size, in batch order)."""
    chunks = x.chunk(groups)
    return torch.cat([c[:1].expand_as(c) for c in chunks])
