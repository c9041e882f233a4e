"""MasaCtrl (Cao et al. 2023) on an inverted image, as PnPInversion's `run_editing_masactrl.py` runs it
(protocols.md §4.3).

SD 1.4 (`model=sd14`), the reference's DDIM scheduler (50 steps), guidance 7.5, mutual self-attention
from step 4 in transformer blocks 10–15. As released, the source branch uses the **empty prompt**
(`prompts = ["", target]`) for the inversion, the offsets and sampling (`source_prompt=empty`);
`source_prompt=source` uses the sample's source prompt instead. `inversion=ddim | direct` are the
published rows; null_text and negative_prompt plug into the same sampler.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.diffusion.attention_control import MutualSelfAttention
from harness.prompt.editor import InversionFields, PromptEditor, timed
from harness.prompt.sampler import sample_branches
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample


@dataclass
class MasaCtrlConfig(InversionFields):
    start_step: int = 4
    start_layer: int = 10
    source_prompt: str = "empty"  # empty (as released) | source

    def __post_init__(self) -> None:
        if self.source_prompt not in ("empty", "source"):
            raise ValueError(f"masactrl: field 'source_prompt' must be empty or source, got {self.source_prompt!r}")


@METHODS.register("masactrl")
class MasaCtrl(PromptEditor):
    name = "masactrl"
    Config = MasaCtrlConfig

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        c = self.config
        source = sample.encode_source_prompt if c.source_prompt == "source" else ""
        latent = self.encode_image(sample)
        cond = self.conditioning(source, sample.encode_target_prompt)
        inverted, t_inv = timed(self.invert, latent, cond, sample.image, seed)
        controller = MutualSelfAttention(c.start_step, c.start_layer, groups=2)
        sampled, t_edit = timed(sample_branches, self.models.unet, self.schedule, inverted,
                                torch.cat([cond.source, cond.target]), c.guidance, controller)
        return EditResult(self.decode(sampled.latents[1:]), timings={"inversion": t_inv, "editing": t_edit},
                          info=self.base_info(seed, inverted, sampled))
