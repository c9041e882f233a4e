"""What every PIE-Bench editor shares: config fields, latents in and out, prompts, the inversion call.

StyleDiffusion's knobs (`StyleDiffusionFields`, named `style_*`) matter only to `inversion=style_diffusion`;
they are left out of the run-store key of every other inversion, so that adding them kept the keys of
existing runs.

The reference scripts encode with the VAE posterior mean (`latent_dist.mean`), decode by truncating
x·255 and draw no random numbers, so the per-image seed (1234 in the PIE-Bench scripts, `setup_seed`
before every image) does not change their outputs; it is still recorded. The exception is StyleDiffusion,
whose mapping network is initialised from the seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from harness.diffusion.ddim_inversion import DDIMSchedule
from harness.diffusion.graphs import GraphedUNet
from harness.diffusion.latents import decode_to_uint8, encode
from harness.method import EditMethod
from harness.prompt import image_tokens
from harness.prompt.inversion import INVERSIONS, Conditioning, Inverted, NullTextSettings, invert
from harness.prompt.style_diffusion import StyleInputs, StyleSettings
from harness.prompt.sampler import Sampled
from harness.types import PromptEditSample


@dataclass
class EditorFields:
    """Config fields common to the editors: the inversion and the guided DDIM walk."""

    inversion: str = "ddim"  # ddim | null_text | negative_prompt | direct | style_diffusion (each editor lists what it supports)
    steps: int = 50
    guidance: float = 7.5
    cuda_graphs: bool = True  # GPU: replay plain UNet calls (inversions, reconstructions) as CUDA graphs; same outputs


@dataclass
class InversionFields(EditorFields):
    """Editors that take every inversion (`PromptEditor.invert`) also carry the null-text settings."""

    null_text_inner_steps: int = 10
    null_text_lr: float = 1e-2
    null_text_early_stop: float = 1e-5


@dataclass
class StyleDiffusionFields:
    """`inversion=style_diffusion` (harness/prompt/style_diffusion.py), PnPInversion's defaults."""

    style_inner_steps: int = 100  # num_inner_steps: Adam iterations at step 0, ⌈n·e^(−0.1·i)⌉ at step i
    style_lr: float = 1e-2  # × (1 − i/100) at step i
    style_early_stop: float = 1e-5  # + i·2e−5
    style_value_replace: float = 0.5  # τ_v: share of the steps in which the edit branch uses the mapped values
    style_image_encoder: str = "openai/clip-vit-base-patch16"  # hub id | local dir | random | random_tiny


class PromptEditor(EditMethod):
    families = ("prompt",)
    # StyleDiffusion also needs `StyleDiffusionFields`: editors that carry them list it (p2p)
    inversions: ClassVar[tuple[str, ...]] = tuple(k for k in INVERSIONS if k != "style_diffusion")
    # whose DDIM timesteps: "p2p" = Prompt-to-Prompt/MasaCtrl's own scheduler (980 … 0); "model" =
    # `DDIMScheduler.from_config` of the model's scheduler config (981, 961, …, 1), as PnP and Pix2Pix-Zero do
    schedule_source: ClassVar[str] = "p2p"
    runtime_fields = ("cuda_graphs",)  # replaying the same kernels changes no output

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if config.inversion not in self.inversions:
            raise ValueError(f"method {self.name!r}: field 'inversion' must be one of {', '.join(self.inversions)}, "
                             f"got {config.inversion!r}")

    def setup(self, models) -> None:
        self.models = models
        self.schedule = self.make_schedule(models)
        self._unet_eps = GraphedUNet(models.unet, enabled=self.config.cuda_graphs)
        if self.config.inversion == "style_diffusion":
            self.style_encoder_spec = image_tokens.resolve_spec(self.config.style_image_encoder, models)

    def make_schedule(self, models) -> DDIMSchedule:
        if self.schedule_source == "model":
            return DDIMSchedule.from_model_config(models.scheduler_config, self.config.steps)
        return DDIMSchedule.p2p(self.config.steps)

    def eps(self, x: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction; replayed as a CUDA graph where that is safe (`GraphedUNet`)."""
        return self._unet_eps(x, t, context)

    def encode_image(self, sample: PromptEditSample, generator: torch.Generator | None = None) -> torch.Tensor:
        """The posterior mean, or with `generator` a posterior sample (Pix2Pix-Zero's `latent_dist.sample()`)."""
        h, w = sample.image.shape[:2]
        if h % 8 or w % 8:
            raise ValueError(f"{sample.sample_id}: image is {w}×{h}; prompt editors need sides divisible by 8 "
                             "(PIE-Bench images are 512×512)")
        mode = "mode" if generator is None else "sample"
        return encode(self.models.vae, sample.image, generator, self.models.dtype, mode=mode)

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(decode_to_uint8(self.models.vae, latent))

    def conditioning(self, source: str, target: str) -> Conditioning:
        m = self.models
        return Conditioning(m.encode_prompt(source), m.encode_prompt(target), m.encode_prompt(""))

    def invert(self, latent: torch.Tensor, cond: Conditioning, image: np.ndarray, seed: int) -> Inverted:
        """`image` (uint8) and `seed` matter to StyleDiffusion only: its mapping network sees the image's CLIP
        tokens and is initialised from `seed`."""
        c = self.config
        settings = NullTextSettings(c.null_text_inner_steps, c.null_text_lr, c.null_text_early_stop)
        style = self.style_inputs(image, seed) if c.inversion == "style_diffusion" else None
        return invert(c.inversion, self.eps, self.schedule, latent, cond, c.guidance,
                      style if c.inversion == "style_diffusion" else settings)

    def style_inputs(self, image: np.ndarray, seed: int) -> StyleInputs:
        c, m, spec = self.config, self.models, self.style_encoder_spec
        encoder, identity = image_tokens.build_encoder(spec, str(m.device))
        tokens = image_tokens.image_tokens(encoder, image).to(m.device)
        width = m.text_encoder.config.hidden_size
        if tokens.shape[-1] != width:
            raise ValueError(f"method {self.name!r}: style_image_encoder {spec!r} gives {tokens.shape[-1]}-wide tokens, "
                             f"but the text embeddings are {width} wide (StyleDiffusion multiplies them element-wise)")
        settings = StyleSettings(c.style_inner_steps, c.style_lr, c.style_early_stop, c.style_value_replace, seed)
        return StyleInputs(m.unet, tokens, settings, identity)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.config.inversion != "style_diffusion":
            out["config"] = {k: v for k, v in out["config"].items() if not k.startswith("style_")}
        return out

    def base_info(self, seed: int, inverted: Inverted, sampled: Sampled) -> dict[str, Any]:
        """Provenance of one edit: the inversion, its per-step work (null-text Adam iterations, Direct
        Inversion's offset sizes) and the timesteps."""
        info: dict[str, Any] = {"inversion": self.config.inversion, "seed": seed,
                                "denoising_timesteps": self.schedule.timesteps}
        for key in ("null_text_iterations", "null_text_loss", "style_diffusion_iterations", "style_diffusion_loss", "style_diffusion_encoder"):
            if key in inverted.info:
                info[key] = inverted.info[key]
        if sampled.source_offsets:
            info["direct_offset_mean_abs"] = [float(o.abs().mean()) for o in sampled.source_offsets]
        return info


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
