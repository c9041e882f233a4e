"""Plug-and-Play (Tumanyan et al. 2023) as PnPInversion's `run_editing_pnp.py` runs it (protocols.md §4.3).

SD 1.5 in fp16 (`model=sd15`), DDIM from the model's own scheduler config (50 steps, 981 … 1), inversion
with the source prompt and guidance 1. Each step runs one UNet call on [source branch, target uncond,
target cond]: the source branch is conditioned on the empty prompt, the target on the target prompt with
the negative prompt "ugly, blurry, black, low res, unrealistic" as its unconditional, guidance 7.5. The
source branch's features are injected into both target rows: the output of `up_blocks[1].resnets[1]`'s
second convolution (before the residual) for the first 0.8 of the steps, and the self-attention queries
and keys of transformer blocks 8–15 (decoder blocks 4–11) for the first 0.5.

The source branch per step:
- `inversion=direct`: the inversion latent z*_t itself — Direct Inversion's source branch, which the
  reference feeds straight from the inversion;
- `inversion=ddim`: the plain DDIM reconstruction (source prompt, no guidance) as released, which is one
  step ahead: step i uses the reconstruction *after* step i, and the target starts from the reconstruction
  after step 0 (the reference's `latent_reconstruction` list after `reverse()`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from harness.diffusion.attention_control import AttentionController, controlled_attention
from harness.diffusion.ddim_inversion import ddim_invert
from harness.prompt.editor import EditorFields, PromptEditor, timed
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample

ATTENTION_BLOCKS = frozenset(range(8, 16))


@dataclass
class PnPConfig(EditorFields):
    feature_injection: float = 0.8  # pnp_f_t
    attention_injection: float = 0.5  # pnp_attn_t
    negative_prompt: str = "ugly, blurry, black, low res, unrealistic"


class PnPInjection(AttentionController):
    """Rows [source, target uncond, target cond]: targets take the source's self-attention q and k."""

    def __init__(self, attention_steps: int, feature_steps: int) -> None:
        self.attention_steps, self.feature_steps = attention_steps, feature_steps

    def edit_qkv(self, block, is_cross, q, k, v):
        if is_cross or block not in ATTENTION_BLOCKS or self.step >= self.attention_steps:
            return q, k, v
        return q[:1].expand_as(q), k[:1].expand_as(k), v

    @contextlib.contextmanager
    def feature_hook(self, unet) -> Iterator[None]:
        def inject(module, inputs, output):
            return output[:1].expand_as(output).clone() if self.step < self.feature_steps else output

        handle = unet.up_blocks[1].resnets[1].conv2.register_forward_hook(inject)
        try:
            yield
        finally:
            handle.remove()


@METHODS.register("pnp")
class PlugAndPlay(PromptEditor):
    name = "pnp"
    Config = PnPConfig
    inversions = ("ddim", "direct")
    schedule_source = "model"

    def source_branch(self, latent: torch.Tensor, source: torch.Tensor) -> list[torch.Tensor]:
        """The source latent of each denoising step (for `ddim`, the reference's reconstruction pass is part
        of its preprocessing, so it is timed as inversion)."""
        schedule, n = self.schedule, self.config.steps
        inverted = ddim_invert(lambda x, t: self.eps(x, t, source), latent, schedule)
        if self.config.inversion == "direct":
            return [inverted[n - i] for i in range(n)]
        x, after = inverted[-1], []
        for t in schedule.timesteps:
            x = schedule.step(self.eps(x, t, source), t, x)
            after.append(x)
        return after

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        c, m = self.config, self.models
        latent = self.encode_image(sample)
        cond = self.conditioning(sample.encode_source_prompt, sample.encode_target_prompt)
        sources, t_inv = timed(self.source_branch, latent, cond.source)
        contexts = torch.cat([cond.null, m.encode_prompt(c.negative_prompt), cond.target])
        controller = PnPInjection(int(c.steps * c.attention_injection), int(c.steps * c.feature_injection))

        def denoise() -> torch.Tensor:
            x = sources[0]
            with controlled_attention(m.unet, controller), controller.feature_hook(m.unet):
                for i, t in enumerate(self.schedule.timesteps):
                    controller.step = i
                    eps = self.eps(torch.cat([sources[i], x, x]), t, contexts)
                    eps_u, eps_c = eps[1:2], eps[2:3]
                    x = self.schedule.step(eps_u + c.guidance * (eps_c - eps_u), t, x)
            return x

        x, t_edit = timed(denoise)
        info = {"inversion": c.inversion, "seed": seed, "denoising_timesteps": self.schedule.timesteps}
        return EditResult(self.decode(x), timings={"inversion": t_inv, "editing": t_edit}, info=info)
