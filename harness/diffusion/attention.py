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


class KVRecorder:
    """Capture every self-attention K/V output during one pass; replay them, call for call, in another.

    RegionDrag records K/V at each inversion step and pastes them back at the matching denoising step:
    the denoising walk visits the inversion's UNet calls in reverse order, so `replay` serves the calls
    last-first, and within a call the blocks in execution order.
    """

    def __init__(self, unet) -> None:
        self.projections = [(b.attn1.to_k, b.attn1.to_v) for b in transformer_blocks(unet)]
        self.calls: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        def hook_for(index: int, slot: int):
            def hook(module, inputs, output):
                if index == 0 and slot == 0:
                    self.calls.append([[None, None] for _ in self.projections])
                self.calls[-1][index][slot] = output.detach()
            return hook

        handles = [proj.register_forward_hook(hook_for(i, s))
                   for i, pair in enumerate(self.projections) for s, proj in enumerate(pair)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        state = {"call": None}

        def hook_for(index: int, slot: int):
            def hook(module, inputs, output):
                if index == 0 and slot == 0:
                    state["call"] = self.calls.pop()
                return state["call"][index][slot].to(output.dtype)
            return hook

        handles = [proj.register_forward_hook(hook_for(i, s))
                   for i, pair in enumerate(self.projections) for s, proj in enumerate(pair)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self.calls.clear()
