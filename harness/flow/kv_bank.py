"""KV-Edit's attention control (Xilluill/KV-Edit `DoubleStreamBlock_kv`, `SingleStreamBlock_kv`, `Flux_kv`).

Inversion: every double- and single-stream block stores the image tokens' K (normalised, before the rotary
embedding) and V per interval; with `attn_mask` the inversion runs with the reference's block mask (text
attends to everything, masked tokens to text and masked tokens, background to text and background).

Sampling runs on the **masked tokens only**: the transformer gets the masked tokens as its image sequence and
the full image position ids, so that `image_rotary_emb` covers [text, all image tokens]. In every block the
stored K/V of the interval are copied, the masked positions overwritten with the current tokens' K/V, the
full rotary embedding applied to K and the [text, masked] rows of it to Q; `attn_scale` ≠ 0 adds that value
to the logits of the background keys (the reference's `attention_scale` bias).
"""
from __future__ import annotations

import torch

from harness.flow.attention import FlowController, Site, apply_rope, sdpa


class KVBank(FlowController):
    """`mask_idx`: indices of the masked image tokens (LongTensor); `n_img`: image tokens in total."""

    def __init__(self, mask_idx: torch.Tensor, n_img: int, txt_len: int = 512, attn_scale: float = 0.0) -> None:
        super().__init__(txt_len)
        self.mask_idx, self.n_img, self.attn_scale = mask_idx, n_img, attn_scale
        self.bank: dict[tuple[int, Site], tuple[torch.Tensor, torch.Tensor]] = {}
        self.inversion_mask: torch.Tensor | None = None
        self.offload = False  # store in host memory (the release's `.cpu()`): 57 blocks × steps × K/V of all tokens

    def use_inversion_mask(self, device: torch.device) -> None:
        """The reference's `create_attention_mask` (bool, [text, image] × [text, image])."""
        n = self.txt_len + self.n_img
        masked = torch.zeros(n, dtype=torch.bool, device=device)
        masked[self.txt_len + self.mask_idx] = True
        text = torch.zeros(n, dtype=torch.bool, device=device)
        text[: self.txt_len] = True
        background = ~masked & ~text
        allowed = text[:, None] | (masked[:, None] & (text | masked)[None]) | (background[:, None] & (text | background)[None])
        self.inversion_mask = allowed[None, None]

    def _scale_bias(self, q: torch.Tensor) -> torch.Tensor | None:
        if self.attn_scale == 0:
            return None
        bias = torch.full((self.txt_len + self.n_img,), self.attn_scale, dtype=q.dtype, device=q.device)
        bias[: self.txt_len] = 0
        bias[self.txt_len + self.mask_idx] = 0
        return bias[None, None, None]

    def attend(self, site: Site, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope) -> torch.Tensor:
        ctx, n = self.context, self.txt_len
        key = (ctx.interval, site)
        if ctx.inverse:
            store = "cpu" if self.offload else k.device
            self.bank[key] = (k[:, n:].to(store, copy=True), v[:, n:].to(store, copy=True))
            return sdpa(apply_rope(q, rope), apply_rope(k, rope), v, self.inversion_mask)
        source_k, source_v = (t.to(q.device, copy=True) for t in self.bank[key])
        source_k[:, self.mask_idx] = k[:, n:]
        source_v[:, self.mask_idx] = v[:, n:]
        rows = torch.cat([torch.arange(n, device=q.device), n + self.mask_idx])
        q = apply_rope(q, (rope[0][rows], rope[1][rows]))
        k = apply_rope(torch.cat([k[:, :n], source_k], dim=1), rope)
        return sdpa(q, k, torch.cat([v[:, :n], source_v], dim=1), self._scale_bias(q))
