"""InstructPix2Pix (Brooks et al., CVPR'23; timbrooks/instruct-pix2pix `edit_cli.py`) through diffusers'
`StableDiffusionInstructPix2PixPipeline`, on the sample's `instruction` (PIE-Bench's `editing_instruction`,
an `instruction_folder` entry's `instruction`).

Released defaults (`edit_cli.py`, also MagicBrush's `edit_cli_single_multi_turn.py`): 100 steps, text guidance
(`cfg-text`) 7.5, image guidance (`cfg-image`) 1.5, Euler-ancestral sampling, `resolution` 512. Inputs and
outputs as released:
- `resize: released`: the source is fitted (`ImageOps.fit`, Lanczos, centre crop) to the script's size — the
  longer side scaled to `resolution`, then both sides to multiples of 64 (a 512² PIE-Bench image stays
  512²); `none` hands the source to diffusers unchanged (it rounds sides down to multiples of 8);
- the decoded image is quantised by truncation (`255·x` cast to uint8) and resized back to the source size
  (PIL bicubic) where the canvas differs.
Sampler: diffusers' `EulerAncestralDiscreteScheduler` (the hub repositories' scheduler) with `linspace`
timesteps equals k-diffusion's `sample_euler_ancestral` on `get_sigmas(steps)` up to the σ interpolation
between integer timesteps (diffusers: linear in σ; k-diffusion: linear in log σ). Noise: a CPU generator
seeded with the run seed (the release seeds the GPU's global generator), recorded in `info`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from harness.diffusion.inpaint import truncate_to_uint8
from harness.diffusion.numerics import NonFiniteError
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample

RESIZE = ("released", "none")


@dataclass
class InstructPix2PixConfig:
    steps: int = 100
    guidance_scale: float = 7.5  # text guidance (cfg-text)
    image_guidance_scale: float = 1.5  # image guidance (cfg-image)
    resolution: int = 512
    resize: str = "released"  # released (ImageOps.fit to multiples of 64) | none (diffusers' rounding to 8)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE:
            raise ValueError(f"field 'resize' must be one of {RESIZE}, got {self.resize!r}")


def released_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """`edit_cli.py`'s canvas: the longer side to `resolution`, the shorter rounded up to a multiple of 64 by
    the common factor, then both sides floored to multiples of 64."""
    factor = resolution / max(width, height)
    factor = math.ceil(min(width, height) * factor / 64) * 64 / min(width, height)
    return int((width * factor) // 64) * 64, int((height * factor) // 64) * 64


def instruction_of(sample: PromptEditSample, method: str) -> str:
    """The sample's instruction; an error naming the sample and the field when it has none."""
    text = getattr(sample, "instruction", "")
    if not text:
        raise ValueError(f"{sample.sample_id}: field 'instruction' is empty; {method} edits by instruction "
                         "(PIE-Bench: editing_instruction; instruction_folder: instruction)")
    return text


def to_source_size(decoded: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[0, 1] float H×W×3 → uint8 by truncation, resized back (bicubic) to `size` = (width, height)."""
    if not np.isfinite(decoded).all():  # truncation would silently turn NaN into black pixels
        raise NonFiniteError("pipeline output", detail=f"{int(np.isnan(decoded).sum())} NaN (fp16 overflow?)")
    edited = truncate_to_uint8(decoded)
    if (edited.shape[1], edited.shape[0]) != size:
        edited = np.asarray(Image.fromarray(edited).resize(size, Image.BICUBIC))
    return np.ascontiguousarray(edited)


@METHODS.register("instruct_pix2pix")
class InstructPix2Pix(EditMethod):
    name = "instruct_pix2pix"
    families = ("prompt",)
    Config = InstructPix2PixConfig

    def setup(self, models) -> None:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        self.require_pipeline(models, StableDiffusionInstructPix2PixPipeline, "an InstructPix2Pix-architecture model",
                              "model: instruct_pix2pix, magicbrush, random_instruct_pix2pix or tiny_instruct_pix2pix")
        self.models = models

    def canvas(self, sample: PromptEditSample) -> Image.Image:
        image = Image.fromarray(sample.image)
        if self.config.resize == "none":
            return image
        return ImageOps.fit(image, released_size(*sample.size, self.config.resolution), method=Image.Resampling.LANCZOS)

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        cfg, pipe = self.config, self.models.pipe
        image = self.canvas(sample)
        out = pipe(prompt=instruction_of(sample, self.name), image=image, num_inference_steps=cfg.steps,
                   guidance_scale=cfg.guidance_scale, image_guidance_scale=cfg.image_guidance_scale,
                   generator=torch.Generator().manual_seed(seed), output_type="np")
        info = {"seed": seed, "generator": "cpu", "canvas": list(image.size), "scheduler": type(pipe.scheduler).__name__,
                "instruction": sample.instruction}
        return EditResult(image=to_source_size(out.images[0], sample.size), info=info)
