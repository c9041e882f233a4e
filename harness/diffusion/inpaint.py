"""Shared plumbing of the mask-conditioned (9-channel UNet) methods: Paint-by-Example and the Stable
Diffusion inpainting baseline.

Both follow Paint-by-Example's released test-bench script (`scripts/inference_test_bench.py` @52a7e37):
- they work on a square `resolution`² canvas: the script samples a fixed 64×64 latent, i.e. 512² images
  (COCOEE sources are 512²); other sources are resized to the canvas and the result resized back;
- they return the **full decoded image**: unmasked pixels are not pasted back;
- the decoded image in [0, 1] is quantised by truncation, `(x·255).astype(uint8)`, where diffusers'
  own PIL output would round;
- `plms` is the released sampler. LDM's PLMS (`ldm/models/diffusion/plms.py`) and diffusers'
  `PNDMScheduler(skip_prk_steps=True)` are the same algorithm: a pseudo improved-Euler first step (two
  UNet calls), then Adams–Bashforth steps of order 2, 3, 4 on the stored noise predictions — 51 UNet calls
  for 50 steps — on the timesteps `range(0, 1000, 20) + 1` (`leading` spacing, `steps_offset=1`) with the
  final step to ᾱ₀ (`set_alpha_to_one=False`). `ddim` is the script without `--plms` (DDIM, η = 0).

Initial noise: the script seeds once (`seed_everything(42)`) and draws noise for batches of 5 in dataset
order; here every sample draws its own noise from a CPU generator seeded with the run seed, so a sample's
output does not depend on its neighbours or on the device. Same distribution, not the same bits.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from harness.diffusion.numerics import NonFiniteError
from harness.types import ExemplarSample

SCHEDULERS = ("plms", "ddim")


def make_scheduler(name: str, config: Any):
    """A fresh scheduler of kind `name` with the model's noise schedule (betas, offset, prediction type)."""
    from diffusers import DDIMScheduler, PNDMScheduler

    if name == "plms":
        return PNDMScheduler.from_config(config, skip_prk_steps=True, timestep_spacing="leading")
    if name == "ddim":  # LDM's DDIM sampler never clips x0; a PNDM config carries no `clip_sample` key
        return DDIMScheduler.from_config(config, clip_sample=False, timestep_spacing="leading")
    raise ValueError(f"unknown scheduler {name!r}; valid: {SCHEDULERS}")


def derive_pipeline(pipe: Any, scheduler: str, cls: type | None = None) -> Any:
    """A pipeline object of class `cls` (default: `pipe`'s) sharing `pipe`'s modules with its own scheduler,
    so that the process-wide cached pipeline is never mutated."""
    derived = (cls or type(pipe))(**{**pipe.components, "scheduler": make_scheduler(scheduler, pipe.scheduler.config)})
    derived.set_progress_bar_config(disable=True)
    return derived


def canvas(sample: ExemplarSample, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Source image (PIL bicubic) and fill mask (nearest) at `resolution`²; unchanged when already that size."""
    if resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8, got {resolution}")
    image, mask = sample.image, sample.mask
    if image.shape[:2] != (resolution, resolution):
        image = np.asarray(Image.fromarray(image).resize((resolution, resolution), Image.BICUBIC))
        mask = np.asarray(Image.fromarray(mask).resize((resolution, resolution), Image.NEAREST))
    if not mask.any():
        raise ValueError(f"{sample.sample_id}: the mask is empty at {resolution}x{resolution}")
    return image, mask


def truncate_to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float H×W×3 → uint8 by truncation, as the released script saves its results."""
    return (np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def inpaint(pipe: Any, sample: ExemplarSample, resolution: int, seed: int, **call: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Run an inpainting pipeline on the sample's canvas; returns the uint8 result at the source size and
    provenance (scheduler, timesteps actually used, canvas size). `call` holds the pipeline's condition
    (`example_image` or `prompt`) and sampling options."""
    image, mask = canvas(sample, resolution)
    generator = torch.Generator().manual_seed(seed)
    out = pipe(image=Image.fromarray(image), mask_image=Image.fromarray(mask.astype(np.uint8) * 255),
               height=resolution, width=resolution, generator=generator, output_type="np", **call)
    decoded = out.images[0]
    if not np.isfinite(decoded).all():  # truncation would silently turn NaN into black pixels
        raise NonFiniteError("pipeline output", detail=f"{int(np.isnan(decoded).sum())} NaN, "
                                                       f"{int(np.isinf(decoded).sum())} Inf (fp16 overflow?)")
    edited = truncate_to_uint8(decoded)
    width, height = sample.size
    if (width, height) != (resolution, resolution):
        edited = np.asarray(Image.fromarray(edited).resize((width, height), Image.BICUBIC))
    info = {"scheduler": type(pipe.scheduler).__name__, "denoising_timesteps": [int(t) for t in pipe.scheduler.timesteps],
            "canvas": [resolution, resolution], "resized_to_canvas": (width, height) != (resolution, resolution)}
    return np.ascontiguousarray(edited), info
