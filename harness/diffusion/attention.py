"""Self-attention control through forward hooks on the `attn1` key/value projections.

`transformer_blocks(unet)` lists the 16 SD transformer blocks in execution order (down 0–5, mid 6,
up 7–15); MasaCtrl's `start_layer` and RegionDrag's K/V swap index into that order.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

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
