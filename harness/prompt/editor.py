"""What every PIE-Bench editor shares: config fields, latents in and out, prompts, the inversion call.

The reference scripts encode with the VAE posterior mean (`latent_dist.mean`), decode by truncating
x·255 and never draw random numbers, so the per-image seed (1234 in the PIE-Bench scripts,
`setup_seed` before every image) does not change their outputs; it is still recorded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from harness.diffusion.ddim_inversion import DDIMSchedule
from harness.diffusion.latents import decode_to_uint8, encode
from harness.method import EditMethod
from harness.prompt.inversion import INVERSIONS, Conditioning, Inverted, NullTextSettings, invert
from harness.prompt.sampler import Sampled
from harness.types import PromptEditSample


@dataclass
class EditorFields:
    """Config fields common to the editors: the inversion and the guided DDIM walk."""

    inversion: str = "ddim"  # ddim | null_text | negative_prompt | direct (each editor lists what it supports)
    steps: int = 50
    guidance: float = 7.5


@dataclass
class InversionFields(EditorFields):
    """Editors that take every inversion (`PromptEditor.invert`) also carry the null-text settings."""

    null_text_inner_steps: int = 10
    null_text_lr: float = 1e-2
    null_text_early_stop: float = 1e-5


class PromptEditor(EditMethod):
    families = ("prompt",)
    inversions: ClassVar[tuple[str, ...]] = INVERSIONS

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if config.inversion not in self.inversions:
            raise ValueError(f"method {self.name!r}: field 'inversion' must be one of {', '.join(self.inversions)}, "
                             f"got {config.inversion!r}")

    def setup(self, models) -> None:
        self.models = models
        self.schedule = self.make_schedule(models)

    def make_schedule(self, models) -> DDIMSchedule:
        """Prompt-to-Prompt/MasaCtrl's own DDIM scheduler (980 … 0); PnP overrides."""
        return DDIMSchedule.p2p(self.config.steps)

    def eps(self, x: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
        return self.models.unet(x, t, encoder_hidden_states=context).sample

    def encode_image(self, sample: PromptEditSample) -> torch.Tensor:
        h, w = sample.image.shape[:2]
        if h % 8 or w % 8:
            raise ValueError(f"{sample.sample_id}: image is {w}×{h}; prompt editors need sides divisible by 8 "
                             "(PIE-Bench images are 512×512)")
        return encode(self.models.vae, sample.image, None, self.models.dtype, mode="mode")

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(decode_to_uint8(self.models.vae, latent))

    def conditioning(self, source: str, target: str) -> Conditioning:
        m = self.models
        return Conditioning(m.encode_prompt(source), m.encode_prompt(target), m.encode_prompt(""))

    def invert(self, latent: torch.Tensor, cond: Conditioning) -> Inverted:
        c = self.config
        settings = NullTextSettings(c.null_text_inner_steps, c.null_text_lr, c.null_text_early_stop)
        return invert(c.inversion, self.eps, self.schedule, latent, cond, c.guidance, settings)

    def base_info(self, seed: int, inverted: Inverted, sampled: Sampled) -> dict[str, Any]:
        """Provenance of one edit: the inversion, its per-step work (null-text Adam iterations, Direct
        Inversion's offset sizes) and the timesteps."""
        info: dict[str, Any] = {"inversion": self.config.inversion, "seed": seed,
                                "denoising_timesteps": self.schedule.timesteps}
        if "null_text_iterations" in inverted.info:
            info["null_text_iterations"] = inverted.info["null_text_iterations"]
        if sampled.source_offsets:
            info["direct_offset_mean_abs"] = [float(o.abs().mean()) for o in sampled.source_offsets]
        return info


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
