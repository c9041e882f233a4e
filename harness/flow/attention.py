"""Attention control for FLUX's MM-DiT blocks through diffusers attention processors.

`controlled(transformer, controller)` replaces the processor of every block's attention — the 19 double-stream
(`transformer_blocks`, text and image streams with their own projections) and the 38 single-stream blocks
(`single_transformer_blocks`, one projection over [text, image]) — by `ControlledFluxProcessor`, which
computes the normalised q, k, v exactly as diffusers' `FluxAttnProcessor` does (sequence [text, image], layout
B×L×H×D) and hands them to `controller.attend(site, q, k, v, rope)`. The base controller applies the rotary
embedding and runs SDPA, i.e. changes nothing; editors subclass it:

- `ValueBank` — RF-Solver-Edit and FireFlow: single-stream blocks in [start, end] store V during the inversion
  and replace V by the stored one during sampling, on injected intervals;
- `KVBank` (harness/flow/kv_bank.py) — KV-Edit: every block stores the image tokens' K and V during the
  inversion; sampling runs on the masked tokens only and attends to the stored background K/V.

The controller reads the step in progress from `controller.context` (a `StepContext`, set before every model
call by `harness/flow/solvers.py`'s caller) and knows the text length (`txt_len`) because single-stream blocks
see [text, image] as one sequence.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from harness.flow.solvers import StepContext


@dataclass(frozen=True)
class Site:
    kind: str  # "double" | "single"
    index: int


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    from diffusers.models.embeddings import apply_rotary_emb

    return apply_rotary_emb(x, rope, sequence_dim=1)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """B×L×H×D in and out, as diffusers' native attention backend calls SDPA."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


class FlowController:
    """Plain attention (no control); subclasses override `attend`."""

    def __init__(self, txt_len: int = 512) -> None:
        self.context = StepContext()
        self.txt_len = txt_len

    def attend(self, site: Site, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope) -> torch.Tensor:
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return sdpa(q, k, v)


class ValueBank(FlowController):
    """RF-Solver-Edit's and FireFlow's V sharing: in single-stream blocks `start`…`end` (inclusive), on injected
    intervals, the inversion stores V (text and image tokens alike) per (interval, midpoint call, block) and
    sampling uses the stored V instead of its own where one was stored (FireFlow's reuse steps make no
    first-order call, so some keys are never stored; RF-Solver stores every key it reads)."""

    def __init__(self, start: int, end: int, txt_len: int = 512) -> None:
        super().__init__(txt_len)
        self.start, self.end = start, end
        self.bank: dict[tuple[int, bool, int], torch.Tensor] = {}

    def attend(self, site: Site, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope) -> torch.Tensor:
        ctx = self.context
        if site.kind == "single" and self.start <= site.index <= self.end and ctx.inject:
            key = (ctx.interval, ctx.second_order, site.index)
            if ctx.inverse:
                self.bank[key] = v
            elif key in self.bank:
                v = self.bank[key]
        return super().attend(site, q, k, v, rope)


class ControlledFluxProcessor:
    """`FluxAttnProcessor` with the attention itself delegated to a controller."""

    def __init__(self, controller: FlowController, site: Site) -> None:
        self.controller, self.site = controller, site

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None) -> torch.Tensor:
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        q, k, v, eq, ek, ev = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        q, k, v = (t.unflatten(-1, (-1, attn.head_dim)) for t in (q, k, v))
        q, k = attn.norm_q(q), attn.norm_k(k)
        if attn.added_kv_proj_dim is not None:
            eq, ek, ev = (t.unflatten(-1, (-1, attn.head_dim)) for t in (eq, ek, ev))
            q = torch.cat([attn.norm_added_q(eq), q], dim=1)
            k = torch.cat([attn.norm_added_k(ek), k], dim=1)
            v = torch.cat([ev, v], dim=1)
        out = self.controller.attend(self.site, q, k, v, image_rotary_emb).flatten(2, 3).to(q.dtype)
        if encoder_hidden_states is None:
            return out
        n_txt = encoder_hidden_states.shape[1]
        txt, img = out[:, :n_txt], out[:, n_txt:]
        img = attn.to_out[1](attn.to_out[0](img.contiguous()))
        return img, attn.to_add_out(txt.contiguous())


@contextlib.contextmanager
def controlled(transformer, controller: FlowController) -> Iterator[FlowController]:
    """Install `controller` in every block for the duration of the block; the original processors come back
    afterwards, also on errors."""
    blocks = [(Site("double", i), b.attn) for i, b in enumerate(transformer.transformer_blocks)]
    blocks += [(Site("single", i), b.attn) for i, b in enumerate(transformer.single_transformer_blocks)]
    saved = [attn.processor for _, attn in blocks]
    for site, attn in blocks:
        attn.set_processor(ControlledFluxProcessor(controller, site))
    try:
        yield controller
    finally:
        for (_, attn), processor in zip(blocks, saved):
            attn.set_processor(processor)
