"""FLUX.1-Kontext-dev (Black Forest Labs 2025) as an instruction editor on PIE-Bench's `editing_instruction`,
through diffusers' `FluxKontextPipeline` (model=flux_kontext).

Defaults are the pipeline's documented example (`guidance_scale=2.5`, 28 steps) with its own resizing: the
input is resized to the preferred Kontext resolution of the closest aspect ratio (`auto_resize`, 1024×1024 for
PIE-Bench's 512×512 squares) and the result resized back to the source size with PIL's Lanczos filter, so that
PIE-Bench's metrics compare equal-size images. `auto_resize: false` edits at the source size (only sides
divisible by 16). Initial latents come from a generator seeded with the sample's seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from harness.flow.editor import FlowEditor
from harness.flow.latents import check_size
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample


@dataclass
class KontextConfig:
    steps: int = 28
    guidance: float = 2.5
    auto_resize: bool = True
    max_area: int = 1024 ** 2
    max_sequence_length: int = 512


@METHODS.register("flux_kontext")
class FluxKontext(FlowEditor):
    name = "flux_kontext"
    Config = KontextConfig
    pipelines = ("flux_kontext",)

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        c = self.config
        if not sample.instruction.strip():
            raise ValueError(f"{sample.sample_id}: flux_kontext edits by instruction; the sample has no "
                             "editing_instruction")
        h, w = sample.image.shape[:2]
        if not c.auto_resize:
            check_size(sample.image, sample.sample_id)
        # without auto_resize the pipeline still rescales to `max_area`: the source's area keeps its size
        size = dict(max_area=c.max_area) if c.auto_resize else dict(height=h, width=w, max_area=h * w)
        gen = torch.Generator(self.pipe.transformer.device).manual_seed(seed)
        start = time.perf_counter()
        out = self.pipe(image=Image.fromarray(sample.image), prompt=sample.instruction, num_inference_steps=c.steps,
                        guidance_scale=c.guidance, generator=gen, _auto_resize=c.auto_resize,
                        max_sequence_length=c.max_sequence_length, output_type="pil", **size).images[0]
        elapsed = time.perf_counter() - start
        edited_size = out.size
        if out.size != (w, h):
            out = out.resize((w, h), Image.LANCZOS)
        info = {"seed": seed, "instruction": sample.instruction, "edited_size": list(edited_size)}
        return EditResult(np.asarray(out.convert("RGB")).copy(), timings={"editing": elapsed}, info=info)
