"""Self-attention control: K/V capture and replay (RegionDrag), mutual self-attention (MasaCtrl).

`transformer_blocks(unet)` lists the 16 SD transformer blocks in execution order (down 0–5, mid 6,
up 7–15); MasaCtrl's `start_layer` and RegionDrag's K/V swap index into that order.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


def transformer_blocks(unet) -> list:
    blocks = []
    for block in (*unet.down_blocks, unet.mid_block, *unet.up_blocks):
        for attention in getattr(block, "attentions", None) or ():
            blocks.extend(attention.transformer_blocks)
    return blocks


class KVBank:
    """Every self-attention K/V output of a UNet call, stored in slot `slot` of a preallocated bank.

    RegionDrag records K/V at each inversion step (`capture`, slot = step index) and pastes them back at
    the matching denoising step (`paste`, slot = the inversion step being undone). The slot is a device
    tensor and the banks are allocated once, so both modes also run inside a captured CUDA graph: the
    copies into and out of the bank are part of the graph, and only `slot` changes between replays.
    """

    def __init__(self, unet, n_slots: int) -> None:
        self.projections = [(b.attn1.to_k, b.attn1.to_v) for b in transformer_blocks(unet)]
        self.n_slots = n_slots
        self.slot = torch.zeros(1, dtype=torch.long, device=unet.device)
        self.banks: dict[tuple[int, int], torch.Tensor] = {}

    def set_slot(self, index: int) -> None:
        self.slot.fill_(index)

    def _bank(self, key: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        bank = self.banks.get(key)
        if bank is None or bank.shape[1:] != like.shape or bank.dtype != like.dtype:
            bank = self.banks[key] = torch.empty((self.n_slots, *like.shape), dtype=like.dtype, device=like.device)
        return bank

    @contextlib.contextmanager
    def _hooks(self, make) -> Iterator[None]:
        handles = [proj.register_forward_hook(make((i, s)))
                   for i, pair in enumerate(self.projections) for s, proj in enumerate(pair)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def capture(self):
        def make(key):
            def hook(module, inputs, output):
                self._bank(key, output).index_copy_(0, self.slot, output.detach()[None])
            return hook
        return self._hooks(make)

    def paste(self):
        def make(key):
            def hook(module, inputs, output):
                return self.banks[key].index_select(0, self.slot)[0].to(output.dtype)
            return hook
        return self._hooks(make)


class MutualSelfAttention:
    """MasaCtrl mutual self-attention as DragDiffusion registers it (`MutualSelfAttentionControl`).

    The batch holds consecutive [reference, edited] pairs (one pair, or two under classifier-free guidance).
    In the controlled blocks, every query of a pair attends to the *reference* branch's keys and values, so
    the edited branch keeps the reference's appearance while its own queries keep the edited layout; the
    reference branch is unchanged. A block is controlled when its index in execution order is
    ≥ `start_layer` (the released code counts attention calls and halves the count: the same thing), and
    a UNet call when its index since installation lies in [start_step, total_steps).

    Implemented as an attention processor that wraps the block's own processor and hands it the reference
    hidden states as `encoder_hidden_states`: `attn1` then projects K and V from them (SD's `attn1` has no
    group or cross norm), with LoRA layers included since peft wraps the projections themselves.
    """

    def __init__(self, start_step: int = 0, start_layer: int = 10, total_steps: int = 50) -> None:
        if not 0 <= start_layer <= 16:
            raise ValueError(f"MasaCtrl start_layer must be in 0..16 (SD has 16 transformer blocks), got {start_layer}")
        self.start_step, self.start_layer, self.total_steps = start_step, start_layer, total_steps
        self.calls = 0  # UNet calls since installation

    @property
    def active(self) -> bool:
        return self.start_step <= self.calls - 1 < self.total_steps

    @contextlib.contextmanager
    def install(self, unet) -> Iterator["MutualSelfAttention"]:
        """Wrap the processors of the controlled blocks; restore them (and stop counting) on exit."""
        attentions = [block.attn1 for block in transformer_blocks(unet)[self.start_layer:]]
        originals = [attention.processor for attention in attentions]
        for attention, base in zip(attentions, originals):
            attention.set_processor(_MutualProcessor(base, self))
        counter = unet.register_forward_pre_hook(lambda module, args: self._count())
        self.calls = 0
        try:
            yield self
        finally:
            counter.remove()
            for attention, base in zip(attentions, originals):
                attention.set_processor(base)

    def _count(self) -> None:
        self.calls += 1


class _MutualProcessor:
    def __init__(self, base: Any, control: MutualSelfAttention) -> None:
        self.base, self.control = base, control

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        if encoder_hidden_states is None and self.control.active:
            b = hidden_states.shape[0]
            if b % 2:
                raise ValueError(f"mutual self-attention needs [reference, edited] pairs, got a batch of {b}")
            pairs = hidden_states.reshape(b // 2, 2, *hidden_states.shape[1:])
            encoder_hidden_states = pairs[:, :1].expand_as(pairs).reshape_as(hidden_states)
        return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
