"""Paint-by-Example (Fantasy-Studio/Paint-by-Example @52a7e37, protocols.md §5) through diffusers'
`PaintByExamplePipeline`.

Published sampling (`inference_test_bench.sh`): PLMS, 50 steps, guidance scale 5, η 0, 512², seed 42,
full decoded image saved without paste-back (see `harness.diffusion.inpaint` for the sampler equivalence,
quantisation and noise). Inputs as the released test-bench loader prepares them:
- the reference is PIL-resized to 224×224 (a squash, bicubic: Pillow's default) and CLIP-normalised, then
  handed to the pipeline as a tensor — diffusers' own `CLIPImageProcessor` would resize the short side and
  centre-crop instead;
- the masked image is source·(1 − box) in [−1, 1];
- `mask_resize`: the released script brings the keep-mask to the 64×64 latent grid with torchvision's
  tensor `Resize` (bilinear, no antialiasing in torchvision 0.12), which leaves fractional values on box
  edges that are not multiples of 8 (`bilinear`, default); diffusers binarises it and uses nearest
  (`nearest`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.diffusion.inpaint import SCHEDULERS, derive_pipeline, inpaint
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import EditResult, ExemplarSample

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MASK_RESIZE = ("bilinear", "nearest")


@dataclass
class PaintByExampleConfig:
    steps: int = 50
    guidance_scale: float = 5.0
    scheduler: str = "plms"  # plms (as released) | ddim (the script without --plms)
    mask_resize: str = "bilinear"  # bilinear (as released) | nearest (diffusers)
    resolution: int = 512

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"paint_by_example: scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.mask_resize not in MASK_RESIZE:
            raise ValueError(f"paint_by_example: mask_resize must be one of {MASK_RESIZE}, got {self.mask_resize!r}")


def reference_tensor(reference: np.ndarray) -> torch.Tensor:
    """(1, 3, 224, 224) CLIP-normalised reference: PIL `.resize((224, 224))` (bicubic), `ToTensor`, CLIP mean/std."""
    image = np.asarray(Image.fromarray(reference).resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255.0
    x = torch.from_numpy(image).permute(2, 0, 1)
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return ((x - mean) / std)[None]


@functools.cache
def _released_mask_pipeline_class() -> type:
    from diffusers import PaintByExamplePipeline

    class ReleasedMaskPaintByExample(PaintByExamplePipeline):
        """Bilinear (align_corners=False, no antialias) keep-mask to the latent grid, as the released script."""

        def prepare_mask_latents(self, mask, masked_image, batch_size, height, width, *args, **kwargs):
            size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
            mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
            # the parent's nearest interpolation to the same size is then the identity
            return super().prepare_mask_latents(mask, masked_image, batch_size, height, width, *args, **kwargs)

    return ReleasedMaskPaintByExample


@METHODS.register("paint_by_example")
class PaintByExample(EditMethod):
    name = "paint_by_example"
    families = ("exemplar",)
    Config = PaintByExampleConfig

    def setup(self, models) -> None:
        from diffusers import PaintByExamplePipeline

        self.require_pipeline(models, PaintByExamplePipeline, "a Paint-by-Example model",
                              "model: paint_by_example, random_pbe or tiny_pbe")
        self.models = models
        cls = _released_mask_pipeline_class() if self.config.mask_resize == "bilinear" else PaintByExamplePipeline
        self.pipe = derive_pipeline(models.pipe, self.config.scheduler, cls)

    @torch.no_grad()
    def edit(self, sample: ExemplarSample, seed: int) -> EditResult:
        cfg = self.config
        image, info = inpaint(self.pipe, sample, cfg.resolution, seed, example_image=reference_tensor(sample.reference),
                              num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale)
        info["mask_resize"] = cfg.mask_resize
        return EditResult(image=image, info=info)
