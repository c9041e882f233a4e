"""KV-Edit (Zhu et al. 2025, Xilluill/KV-Edit `models/kv_edit.py` `Flux_kv_edit`, `flux/sampling.py`
`denoise_kv`): training-free editing inside a mask that keeps the background's K/V from the inversion.

**Takes PIE-Bench's edit mask as its inpainting mask** (as Xilluill/KV-Edit #13 evaluates; the PIE mask's
1-pixel border, forced to 1 by the PIE-Bench decoder, is part of it unless `clear_mask_border`).

The image is inverted with the source prompt (Euler, guidance 1.5) from t = 0 up to the schedule's
`skip_step`-th time, every block storing the image tokens' K/V (harness/flow/kv_bank.py). Sampling runs with
the target prompt (guidance 5.5) on the masked tokens only: before every step the masked tokens' latents
outside the mask (tokens are 2×2 latent pixels) are reset to the inversion's, and the result is pasted into the
source latents through the latent-resolution mask. Released defaults: the Gradio demo's (28 steps, skip 4,
guidance 1.5 / 5.5, attn_scale 1, re_init and attn_mask off). Quirks kept as released: sampling starts from the
latent stored for the top interval (one inversion step below its end point), and the stored latent of an
interval is the one at its lower time; `re_init` starts instead from `(1 − t)·z0 + t·noise` (noise from the seed).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.flow.attention import controlled
from harness.flow.editor import FlowEditor
from harness.flow.kv_bank import KVBank
from harness.flow.solvers import StepContext, Walk, integrate
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample


@dataclass
class KVEditConfig:
    steps: int = 28  # `denoise_num_steps` (the release ignores `inversion_num_steps`)
    skip_step: int = 4
    inversion_guidance: float = 1.5
    guidance: float = 5.5
    attn_scale: float = 1.0
    re_init: bool = False
    attn_mask: bool = False
    clear_mask_border: bool = False  # drop the PIE decoder's forced 1-pixel mask border
    offload_bank: bool = False  # keep the stored K/V in host memory, as the release does (1024² needs it on 80 GB)

    def __post_init__(self) -> None:
        if not 0 <= self.skip_step < self.steps:
            raise ValueError(f"kv_edit: field 'skip_step' must be in [0, steps), got {self.skip_step}")


def token_mask(pipe, mask: np.ndarray, latent_hw: tuple[int, int]) -> torch.Tensor:
    """The release's mask path: bilinear to the latent grid, > 0 → 1, repeated over 16 channels and packed
    like the latents (1, L, 64)."""
    m = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
    m = F.interpolate(m, size=latent_hw, mode="bilinear", align_corners=False)
    m = (m > 0).float().repeat(1, 16, 1, 1)
    return pipe._pack_latents(m, 1, 16, *latent_hw)


@METHODS.register("kv_edit")
class KVEdit(FlowEditor):
    name = "kv_edit"
    Config = KVEditConfig
    runtime_fields = ("offload_bank",)  # where the bank lives changes no value

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        c = self.config
        if sample.mask is None or not sample.mask.any() or sample.mask.all():
            raise ValueError(f"{sample.sample_id}: KV-Edit needs an edit mask that is neither empty nor full")
        mask = sample.mask.copy()
        if c.clear_mask_border:
            mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = False
        packed = self.encode(sample)
        h, w = mask.shape[0] // self.pipe.vae_scale_factor, mask.shape[1] // self.pipe.vae_scale_factor
        tmask = token_mask(self.pipe, mask, (h, w)).to(packed.latents)
        idx = torch.nonzero(tmask.sum(dim=2)[0] > 0.5)[:, 0]
        source, target = self.text(sample.encode_source_prompt), self.text(sample.encode_target_prompt)
        times = self.schedule(c.steps, packed)[c.skip_step:]
        bank = KVBank(idx, packed.latents.shape[1], source.embeds.shape[1], c.attn_scale)
        bank.offload = c.offload_bank
        if c.attn_mask:
            bank.use_inversion_mask(packed.latents.device)
        with controlled(self.pipe.transformer, bank):
            start = time.perf_counter()
            stored: dict[int, torch.Tensor] = {}
            invert = self.velocity(source, packed.ids, c.inversion_guidance, bank)

            def store_then_call(x: torch.Tensor, t: float, ctx: StepContext) -> torch.Tensor:
                stored[ctx.interval] = x
                return invert(x, t, ctx)
            integrate(store_then_call, packed.latents, Walk(times, "euler", True))
            middle = time.perf_counter()
            x = self._sample(packed, target, times, bank, (stored, tmask, seed))
            timings = {"inversion": middle - start, "editing": time.perf_counter() - middle}
        z0 = packed.latents.clone()
        m = tmask[:, idx]
        z0[:, idx] = z0[:, idx] * (1 - m) + x * m
        info = self.base_info(seed, times) | {"masked_tokens": int(idx.numel()), "tokens": int(packed.latents.shape[1])}
        return EditResult(self.decode(z0, packed), timings=timings, info=info)

    def _sample(self, packed, target, times: list[float], bank: KVBank, state) -> torch.Tensor:
        """`denoise_kv` with `inverse=False`: Euler on the masked tokens, reset outside the mask per step."""
        stored, tmask, seed = state
        idx, m = bank.mask_idx, tmask[:, bank.mask_idx]
        if self.config.re_init:
            gen = torch.Generator(packed.latents.device).manual_seed(seed)
            noise = torch.randn(packed.latents.shape, generator=gen, device=packed.latents.device, dtype=packed.latents.dtype)
            x = (packed.latents * (1 - times[0]) + noise * times[0])[:, idx]
        else:
            x = stored[0][:, idx]
        velocity = self.velocity(target, packed.ids, self.config.guidance, bank)
        for k, (t_curr, t_prev) in enumerate(zip(times[:-1], times[1:])):
            x = stored[k][:, idx] * (1 - m) + x * m
            x = x + (t_prev - t_curr) * velocity(x, t_curr, StepContext(k, False, False, True))
        return x
