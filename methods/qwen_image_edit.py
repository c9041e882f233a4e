"""Qwen-Image-Edit (Qwen team, 2508.02324; `Qwen/Qwen-Image-Edit`) through diffusers' `QwenImageEditPipeline`,
on the sample's `instruction`.

Released defaults (the model card's example): 50 flow-matching Euler steps, true classifier-free guidance
`true_cfg_scale` 4.0 with the negative prompt `" "`, bf16. The pipeline sizes everything itself: the source is
resized (`VaeImageProcessor.resize`, Lanczos) to about `area` = 1024² pixels at its aspect ratio, sides
multiples of 32, both for the VAE condition and for Qwen2.5-VL's view of the image, and the result has that
size; the PIL output (rounded) is resized back to the source size (PIL bicubic) for scoring. `area` other than
1024² (tests, smaller budgets) replaces the pipeline's fixed 1024·1024 in `calculate_dimensions` for the call.
Noise: a CPU generator seeded with the run seed, recorded in `info`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from harness.diffusion.numerics import NonFiniteError
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample
from methods.instruct_pix2pix import instruction_of

RELEASED_AREA = 1024 * 1024


@dataclass
class QwenImageEditConfig:
    steps: int = 50
    true_cfg_scale: float = 4.0
    negative_prompt: str = " "  # the model card's; an empty string would disable guidance in the pipeline
    area: int = RELEASED_AREA  # pixels of the working canvas (released: the pipeline's fixed 1024²)

    def __post_init__(self) -> None:
        if self.steps < 2:  # one step makes the scheduler's shift_terminal stretch divide by zero (NaN image)
            raise ValueError(f"field 'steps' must be at least 2 for the flow-matching schedule, got {self.steps}")
        if self.area < 32 * 32:
            raise ValueError(f"field 'area' must be at least 32*32 pixels, got {self.area}")


@contextlib.contextmanager
def canvas_area(area: int) -> Iterator[None]:
    """Make the pipeline size its canvas for `area` pixels instead of its hard-coded 1024²."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as module

    original = module.calculate_dimensions
    if area == RELEASED_AREA:
        yield
        return
    module.calculate_dimensions = lambda _target, ratio: original(area, ratio)
    try:
        yield
    finally:
        module.calculate_dimensions = original


@METHODS.register("qwen_image_edit")
class QwenImageEdit(EditMethod):
    name = "qwen_image_edit"
    families = ("prompt",)
    Config = QwenImageEditConfig

    def setup(self, models) -> None:
        from diffusers import QwenImageEditPipeline

        self.require_pipeline(models, QwenImageEditPipeline, "a Qwen-Image-Edit model",
                              "model: qwen_image_edit, random_qwen_image_edit or tiny_qwen_image_edit")
        self.models = models

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        cfg, pipe = self.config, self.models.pipe
        with canvas_area(cfg.area):
            out = pipe(image=Image.fromarray(sample.image), prompt=instruction_of(sample, self.name),
                       negative_prompt=cfg.negative_prompt, true_cfg_scale=cfg.true_cfg_scale,
                       num_inference_steps=cfg.steps, generator=torch.Generator().manual_seed(seed), output_type="np")
        decoded = out.images[0]
        if not np.isfinite(decoded).all():  # the uint8 cast would silently turn NaN into black pixels
            raise NonFiniteError("pipeline output", detail=f"{int(np.isnan(decoded).sum())} NaN")
        result = Image.fromarray((decoded * 255).round().astype(np.uint8))  # diffusers' own PIL conversion
        info = {"seed": seed, "generator": "cpu", "canvas": list(result.size), "instruction": sample.instruction}
        if result.size != sample.size:
            result = result.resize(sample.size, Image.BICUBIC)
        return EditResult(image=np.ascontiguousarray(np.asarray(result, dtype=np.uint8)), info=info)
