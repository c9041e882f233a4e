"""`sd_inpaint`: the Stable Diffusion inpainting baseline of exemplar editing (diffusers'
`StableDiffusionInpaintPipeline`, 9-channel UNet), conditioned on text instead of the exemplar.

The prompt comes from `prompt_template`, formatted with the sample's `prompt` and `category` fields
(`"{prompt}"` by default: COCOEE carries no prompt, so the default is unconditional inpainting; use e.g.
`"a photo of {category}"` or a fixed string). Canvas, sampler, output quantisation and no paste-back as
Paint-by-Example's test-bench script (`harness.diffusion.inpaint`), so the two rows differ only in the
model and its condition; guidance 7.5 is diffusers' default for this pipeline.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import torch

from harness.diffusion.inpaint import SCHEDULERS, derive_pipeline, inpaint
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import EditResult, ExemplarSample

TEMPLATE_FIELDS = ("prompt", "category")


@dataclass
class SDInpaintConfig:
    prompt_template: str = "{prompt}"
    negative_prompt: str = ""
    steps: int = 50
    guidance_scale: float = 7.5
    scheduler: str = "plms"
    resolution: int = 512

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"sd_inpaint: scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        fields = {name for _, name, _, _ in string.Formatter().parse(self.prompt_template) if name is not None}
        unknown = sorted(fields - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValueError(f"sd_inpaint: prompt_template {self.prompt_template!r} names unknown field(s) {unknown}; "
                             f"valid: {list(TEMPLATE_FIELDS)}")


@METHODS.register("sd_inpaint")
class SDInpaint(EditMethod):
    name = "sd_inpaint"
    families = ("exemplar",)
    Config = SDInpaintConfig

    def setup(self, models) -> None:
        from diffusers import StableDiffusionInpaintPipeline

        self.require_pipeline(models, StableDiffusionInpaintPipeline, "an inpainting model",
                              "model: sd15_inpaint, random_sd15_inpaint or tiny_inpaint")
        self.models = models
        self.pipe = derive_pipeline(models.pipe, self.config.scheduler)

    @torch.no_grad()
    def edit(self, sample: ExemplarSample, seed: int) -> EditResult:
        cfg = self.config
        prompt = cfg.prompt_template.format(prompt=sample.prompt, category=sample.category)
        image, info = inpaint(self.pipe, sample, cfg.resolution, seed, prompt=prompt,
                              negative_prompt=cfg.negative_prompt or None, num_inference_steps=cfg.steps,
                              guidance_scale=cfg.guidance_scale, strength=1.0)
        info["prompt"] = prompt
        return EditResult(image=image, info=info)
