"""Self-attention K/V banks: record a UNet pass's self-attention keys and values, hand them to a later pass.

Two released uses, one controller (`SelfAttentionBank`, an `AttentionController` for
`controlled_attention`). RegionDrag's `attention.KVBank` replaces *every* block's K/V through projection
hooks so that it can live inside a CUDA graph; these uses need a subset of blocks and concatenation:

- **replace** — DragLoRA's `dup_generation` (protocols_2025.md §3, step 8): at every denoising step the
  original branch (UNet + RecLoRA) runs first and its self-attention K/V of transformer blocks ≥ 10
  (up-blocks 2–3 of SD 1.5) replace the edited branch's own K/V in the same blocks (MasaCtrl with the
  source's K/V taken from another network).
- **concat** — DiffEditor / DragonDiffusion's memory bank (§5, steps 2 and 4): DDIM inversion records the
  up-block self-attention K/V per step; from step 5 on, the editing pass attends over
  `cat[own K/V, inversion K/V of the same step]` along the token axis, for both guidance halves.

The bank stores K/V as the processor sees them, (batch, heads, tokens, head_dim), keyed by (step, block);
a recorded batch of 1 is broadcast to the current batch (the guidance halves). `step` is set by the caller
before each UNet call, as for every controller.
"""
from __future__ import annotations

import torch

from harness.diffusion.attention_control import AttentionController

MODES = ("off", "record", "replace", "concat")


class SelfAttentionBank(AttentionController):
    """Records or injects self-attention K/V of the transformer blocks in `blocks`.

    `mode`: `off` (plain attention), `record` (store this pass's K/V under the current step), `replace` /
    `concat` (use the stored K/V of the current step instead of / after this pass's own). `from_step`:
    injection only from that step on (DiffEditor: 5; DragLoRA: MasaCtrl's start_step 0). `keep`: store on
    the CPU (the release keeps DiffEditor's 50-step bank in host memory) or on the device."""

    def __init__(self, blocks: frozenset[int], from_step: int = 0, keep: str = "device") -> None:
        self.blocks, self.from_step, self.keep = blocks, from_step, keep
        self.mode = "off"
        self.store: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def set_mode(self, mode: str) -> "SelfAttentionBank":
        if mode not in MODES:
            raise ValueError(f"K/V bank mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        return self

    def edit_qkv(self, block, is_cross, q, k, v):
        if is_cross or block not in self.blocks or self.mode == "off":
            return q, k, v
        key = (self.step, block)
        if self.mode == "record":
            keep = (lambda x: x.detach().cpu()) if self.keep == "cpu" else (lambda x: x.detach())
            self.store[key] = (keep(k), keep(v))
            return q, k, v
        if self.step < self.from_step:
            return q, k, v
        k_ref, v_ref = (x.to(q.device, q.dtype).expand(q.shape[0], -1, -1, -1) for x in self.store[key])
        if self.mode == "replace":
            return q, k_ref, v_ref
        return q, torch.cat([k, k_ref], dim=2), torch.cat([v, v_ref], dim=2)


def blocks_from(unet, first: int) -> frozenset[int]:
    """Transformer-block indices ≥ `first` (MasaCtrl's start_layer numbering: down 0–5, mid 6, up 7–15)."""
    from harness.diffusion.attention import transformer_blocks

    return frozenset(range(first, len(transformer_blocks(unet))))


def up_blocks(unet) -> frozenset[int]:
    """Indices of the transformer blocks inside the UNet's up blocks."""
    from harness.diffusion.attention import transformer_blocks

    ids = {id(b) for name, b in unet.named_modules() if name.startswith("up_blocks.")}
    return frozenset(i for i, b in enumerate(transformer_blocks(unet)) if id(b) in ids)
