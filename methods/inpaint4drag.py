"""Inpaint4Drag (Visual-AI/Inpaint4Drag @126ac0c, ICCV'25; protocols_2025.md §1).

1. Bidirectional warp of the user's region by the control points (`harness.diffusion.warping.bi_warp`):
   a preview where every moved pixel is copied from its source, and an inpainting mask over what the move
   uncovered plus a k-pixel band around the moved contour.
2. One LCM inpainting pass over that mask: the SD inpainting model with LCM-LoRA fused and TAESD as VAE
   (components `lcm_lora_sd15`, `taesd`), LCMScheduler, the "" prompt embedded once, guidance 1, strength 1.

Presets (`preset`):
- `benchmark` (`evaluation.py::ImageProcessor`, the published numbers): 4 steps; preview and mask PIL-bicubic
  resized to 512×512 whatever the aspect, the PIL output bicubic-resized back; composite
  preview·(1−M) + inpainted·M with the **user region mask** M, not the inpaint mask (Q-2);
- `app` (`utils/ui_utils.py::preview_out_image` + `inpaint`): 8 steps at the native size snapped to a
  multiple of 8 (image default-resampled, mask nearest); the preview's inpaint area painted white with a
  black 10-pixel grid, as the app hands it to the pipeline; hard composite with the inpaint mask; the result
  bicubic-resized back to the source size where snapping changed it (the app returns the snapped size).

Q-3: the release never passes its generator to the pipeline, so its edits are unseeded. `seeded=true` (the
default here) draws the noise from a CPU generator seeded with the sample's seed, so reruns are identical;
the release's noise is the same distribution, not the same bits. Q-1: `round_single_reference`.
Optional SAM mask refinement (EfficientViT-SAM) is not included: its weights load through no package.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from harness.diffusion.lcm import GraphedPipelineUNet, lcm_inpaint_pipeline
from harness.diffusion.numerics import NonFiniteError
from harness.diffusion.warping import bi_warp, grid_overlay, preview
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import DragSample, EditResult

PRESETS = {"benchmark": dict(steps=4), "app": dict(steps=8)}
BENCHMARK_SIZE = 512


@dataclass
class Inpaint4DragConfig:
    preset: str = "benchmark"  # benchmark (evaluation.py) | app (the Gradio app)
    steps: int | None = None  # LCM steps; null = the preset's (benchmark 4, app 8)
    kernel_size: int = 5  # inpaint-mask dilation and contour band (even → next odd, 0 = none)
    round_single_reference: bool = False  # False = the release's unrounded one-reference translation
    seeded: bool = True  # the release is unseeded
    lora_component: str = "lcm_lora_sd15"  # conf/component/ entry fused into the UNet ("" = none)
    vae_component: str = "taesd"  # conf/component/ entry replacing the SD VAE ("" = the model's own)
    cuda_graphs: bool = True  # GPU only: replay the UNet calls as CUDA graphs (same kernels, same outputs)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"inpaint4drag: preset must be one of {list(PRESETS)}, got {self.preset!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"inpaint4drag: steps must be >= 1 (or null for the preset's), got {self.steps}")

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else PRESETS[self.preset]["steps"]


def snap8(size: tuple[int, int]) -> tuple[int, int]:
    """The app's size rule: a side that is not a multiple of 8 is rounded to the nearest one."""
    width, height = size
    if width % 8 or height % 8:
        return round(width / 8) * 8, round(height / 8) * 8
    return width, height


@METHODS.register("inpaint4drag")
class Inpaint4Drag(EditMethod):
    name = "inpaint4drag"
    Config = Inpaint4DragConfig
    runtime_fields = ("cuda_graphs",)

    def setup(self, models) -> None:
        from diffusers import StableDiffusionInpaintPipeline

        from harness.models.components import load_component

        self.require_pipeline(models, StableDiffusionInpaintPipeline, "an inpainting model",
                              "model@method.inpaint4drag.model: sd15_inpaint, random_sd15_inpaint or tiny_inpaint")
        cfg = self.config
        self.models = models
        lora = load_component(cfg.lora_component, models) if cfg.lora_component else None
        vae = load_component(cfg.vae_component, models) if cfg.vae_component else None
        self.pipe = lcm_inpaint_pipeline(models, lora, vae)
        if cfg.cuda_graphs and models.device.type == "cuda":
            self.pipe.unet = GraphedPipelineUNet(self.pipe.unet)
        self.prompt_embeds = self.pipe.encode_prompt("", models.device, 1, False)[0]  # cached "" embedding

    def _inpaint(self, image: Image.Image, mask: Image.Image, generator, **call) -> object:
        out = self.pipe(prompt_embeds=self.prompt_embeds, image=image, mask_image=mask, guidance_scale=1.0,
                        num_inference_steps=self.config.num_steps, strength=1.0, generator=generator, **call)
        return out.images[0]

    @torch.no_grad()
    def edit(self, sample: DragSample, seed: int) -> EditResult:
        cfg = self.config
        points = np.stack([sample.edit_handles, sample.edit_targets], axis=1).reshape(-1, 2)
        user_mask = sample.editing_mask.astype(np.uint8)
        warp = bi_warp(user_mask, points, cfg.kernel_size, cfg.round_single_reference)
        warped = preview(sample.image, warp)
        generator = torch.Generator().manual_seed(seed) if cfg.seeded else None
        width, height = sample.size
        mask_pil = Image.fromarray(warp.inpaint_mask * 255)
        if cfg.preset == "benchmark":
            size = (BENCHMARK_SIZE, BENCHMARK_SIZE)
            out = self._inpaint(Image.fromarray(warped).resize(size), mask_pil.resize(size), generator, output_type="pil")
            inpainted = np.asarray(out.resize((width, height)))
            image = (warped * (1 - user_mask[..., None]) + inpainted * user_mask[..., None]).astype(np.uint8)
        else:
            size = snap8((width, height))
            painted = Image.fromarray(grid_overlay(warped, warp.inpaint_mask))
            if size != (width, height):
                painted, mask_pil = painted.resize(size), mask_pil.resize(size, Image.NEAREST)
            out = self._inpaint(painted, mask_pil, generator, height=size[1], width=size[0], output_type="np")
            if not np.isfinite(out).all():
                raise NonFiniteError("inpainting output", detail="NaN/Inf in the decoded image (fp16 overflow?)")
            keep = (np.asarray(mask_pil)[..., None] / 255).astype(np.uint8)
            image = (out * 255).astype(np.uint8) * keep + np.asarray(painted) * (1 - keep)
            if size != (width, height):
                image = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
        info = {"preset": cfg.preset, "steps": cfg.num_steps, "moved_pixels": int(len(warp.source)),
                "inpaint_pixels": int(warp.inpaint_mask.sum()), "seeded": cfg.seeded,
                "denoising_timesteps": [int(t) for t in self.pipe.scheduler.timesteps]}
        return EditResult(image=np.ascontiguousarray(image), info=info)
