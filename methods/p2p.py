"""Prompt-to-Prompt editing on an inverted image, as PnPInversion's `run_editing_p2p.py` runs it
(protocols.md §4.3; control details in `harness/prompt/p2p_control.py`).

SD 1.4 (`model=sd14`), the reference's DDIM scheduler (50 steps, 980 … 0), guidance 7.5 in inversion-
corrected sampling of [source, target]; `controller=refine` as released (its scripts never set
`is_replace_controller`), cross-attention control for 0.4 and self-attention for 0.6 of the steps,
LocalBlend on the blend words and the equalizer (×2) on the target blend word when the sample has
blend words. `inversion` = ddim | null_text | negative_prompt | direct | style_diffusion gives the five
published rows.

The StyleDiffusion row ran from its own script (`run_editing_stylediffusion.py`) with other P2P settings:
cross-attention for 0.6 of the steps, self-attention for 0.6, no LocalBlend, no equalizer, and the replace
controller when the two prompts have the same number of characters (`controller=by_length`); the report row
sets these fields (reports/directinversion_pie.yaml, `harness/prompt/style_diffusion.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.prompt.editor import InversionFields, PromptEditor, StyleDiffusionFields, timed
from harness.prompt.inversion import INVERSIONS
from harness.prompt.p2p_control import LocalBlend, P2PController, refinement_mapper, replacement_mapper, token_weights
from harness.prompt.sampler import sample_branches
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample


@dataclass
class P2PConfig(InversionFields, StyleDiffusionFields):
    # refine (as released) | replace (prompts with the same word count) | by_length (StyleDiffusion's
    # script: replace when the prompts have the same number of characters, else refine; equal lengths with
    # different word counts fail the sample, as the reference's replacement mapper does)
    controller: str = "refine"
    cross_replace: float = 0.4
    self_replace: float = 0.6
    local_blend: bool = True
    blend_threshold: float = 0.3
    blend_start: float = 0.2
    equalizer: float = 2.0  # weight on the target blend word's cross-attention; 1 disables

    def __post_init__(self) -> None:
        if self.controller not in ("refine", "replace", "by_length"):
            raise ValueError(f"p2p: field 'controller' must be refine, replace or by_length, got {self.controller!r}")


@METHODS.register("p2p")
class PromptToPrompt(PromptEditor):
    name = "p2p"
    Config = P2PConfig
    inversions = INVERSIONS

    def controller(self, sample: PromptEditSample, source: str, target: str, latent_hw: tuple[int, int]) -> P2PController:
        c, tokenizer = self.config, self.models.tokenizer
        words = sample.blended_words
        if len(words) == 1:
            raise ValueError(f"{sample.sample_id}: blended_words needs a source and a target word, got {words}")
        blend = equalizer = None
        if words:
            if c.local_blend:
                selectors = torch.stack([token_weights(source, words[0], 1.0, tokenizer, default=0.0),
                                         token_weights(target, words[1], 1.0, tokenizer, default=0.0)])
                blend = LocalBlend(selectors, latent_hw, int(c.blend_start * c.steps), c.blend_threshold)
            if c.equalizer != 1.0:
                equalizer = token_weights(target, words[1], c.equalizer, tokenizer)
        replace = c.controller == "replace" or (c.controller == "by_length" and len(source.strip(" ")) == len(target.strip(" ")))
        mapping = (dict(replace=replacement_mapper(source, target, tokenizer)) if replace
                   else dict(refine=refinement_mapper(source, target, tokenizer)))
        return P2PController(int(c.cross_replace * (c.steps + 1)), int(c.self_replace * c.steps),
                             equalizer=equalizer, local_blend=blend, **mapping)

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        source, target = sample.encode_source_prompt, sample.encode_target_prompt
        latent = self.encode_image(sample)
        cond = self.conditioning(source, target)
        inverted, t_inv = timed(self.invert, latent, cond, sample.image, seed)
        controller = self.controller(sample, source, target, tuple(latent.shape[-2:]))
        contexts = torch.cat([cond.source, cond.target])
        sampled, t_edit = timed(sample_branches, self.models.unet, self.schedule, inverted, contexts,
                                self.config.guidance, controller)
        info = self.base_info(seed, inverted, sampled) | {"local_blend": controller.local_blend is not None,
                                                          "controller": "refine" if controller.refine is not None else "replace"}
        return EditResult(self.decode(sampled.latents[1:]), timings={"inversion": t_inv, "editing": t_edit}, info=info)
