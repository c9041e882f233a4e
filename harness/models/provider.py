"""Resolve a `model` config into a diffusers pipeline, once per process.

Two sources, one code path afterwards:
- `pretrained`: `from_pretrained` from a local directory, or from the cached snapshot of a hub repository
  (real weights, for users; harness/models/hub.py fetches, harness/models/weights.py verifies against
  the weights lock);
- `random`: an exact architecture from `architectures.py` with seeded random weights, built offline
  (full size on the GPU for timing, `tiny` on the CPU for tests);
The components are handed to methods and metrics as a `DiffusionModels` bundle that also says what it is
(`identity`), so every score row can name the network that produced it.

`pipeline` selects the diffusers pipeline: `stable_diffusion` (default), `sd_inpaint` (9-channel UNet,
`StableDiffusionInpaintPipeline`) or `paint_by_example` (9-channel UNet conditioned on a CLIP image
encoder instead of text, `PaintByExamplePipeline`); `flux` and `flux_kontext` build FLUX.1 pipelines
(harness/models/flux.py); the instruction editors' `instruct_pix2pix` and `qwen_image_edit` are built and
loaded by harness/models/instruct.py.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from harness import determinism
from harness.models import instruct
from harness.models.flux import FLUX_PIPELINES, build_random_flux, load_pretrained_flux
from harness.models.spec import PIPELINES, ModelSpec

log = logging.getLogger(__name__)

@dataclass
class DiffusionModels:
    """The loaded components plus what they are."""

    spec: ModelSpec
    pipe: Any  # diffusers.StableDiffusionPipeline
    device: torch.device
    dtype: torch.dtype
    # real weights: `source@revision sha256:<digest of the files loaded>` (harness/models/weights.py), which
    # every sample record carries through `describe()`
    weights: str | None = None

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def text_encoder(self):
        return self.pipe.text_encoder

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def scheduler_config(self) -> Mapping[str, Any]:
        return self.pipe.scheduler.config

    @property
    def is_random(self) -> bool:
        return self.spec.source == "random"

    def describe(self) -> dict[str, Any]:
        out = {"model": self.spec.identity, "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device)}
        if self.weights:
            out["weights"] = self.weights
        if self.spec.memory_format:
            out["memory_format"] = self.spec.memory_format
        return out

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """CLIP last hidden state of `prompt` (1, 77, C): the text condition every SD method here uses."""
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids)[0].to(self.dtype)


def build_random_pipeline(arch: str, seed: int, device: torch.device | str = "cpu", pipeline: str = "stable_diffusion"):
    """A `pipeline` of architecture `arch` with weights drawn after `torch.manual_seed(seed)`.

    Inpainting pipelines get the 9-channel UNet input (4 latent + 4 masked-image latent + 1 mask);
    Paint-by-Example replaces the text encoder by the architecture's `image_encoder` (a CLIP vision tower
    projected to the UNet's cross-attention width)."""
    from diffusers import (AutoencoderKL, PaintByExamplePipeline, PNDMScheduler, StableDiffusionInpaintPipeline,
                           StableDiffusionPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    from harness.models.architectures import ARCHITECTURES, PNDM_SCHEDULER
    from harness.models.tokenizer import clip_tokenizer

    try:
        spec = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown random architecture {arch!r}; valid: {sorted(ARCHITECTURES)}") from None
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; valid: {list(PIPELINES)}")
    if pipeline == "paint_by_example" and "image_encoder" not in spec:
        raise ValueError(f"architecture {arch!r} has no image_encoder config for pipeline 'paint_by_example'")
    unet_cfg = dict(spec["unet"], in_channels=9) if pipeline != "stable_diffusion" else spec["unet"]
    with determinism.seeded_global_rng(seed), torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**spec["vae"])
        if pipeline == "paint_by_example":
            image_encoder = _paint_by_example_encoder(spec["image_encoder"], unet_cfg["cross_attention_dim"])
        else:
            text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"]))
    scheduler = PNDMScheduler(**PNDM_SCHEDULER, prediction_type=spec["prediction_type"])
    common = dict(vae=vae, unet=unet, scheduler=scheduler, safety_checker=None, requires_safety_checker=False)
    if pipeline == "paint_by_example":
        from transformers import CLIPImageProcessor

        return PaintByExamplePipeline(image_encoder=image_encoder, feature_extractor=CLIPImageProcessor(), **common)
    cls = StableDiffusionInpaintPipeline if pipeline == "sd_inpaint" else StableDiffusionPipeline
    return cls(text_encoder=text_encoder, tokenizer=clip_tokenizer(spec["pad_token"]), feature_extractor=None, **common)


def _paint_by_example_encoder(vision: Mapping[str, Any], proj_size: int):
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
    from transformers import CLIPVisionConfig

    return PaintByExampleImageEncoder(CLIPVisionConfig(**vision), proj_size=proj_size)


def load_pretrained_pipeline(spec: ModelSpec, dtype: torch.dtype, setting: str = "model"):
    """`from_pretrained` for the spec's pipeline, without the safety checker, from the directory
    `weights.checked_dir` gives (the local directory, or the hub snapshot of only the files the harness
    reads, verified against the weights lock when one is in effect)."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    from harness.models.hub import WeightsNotFoundError, effective_variant
    from harness.models.sources import model_source
    from harness.models.weights import checked_dir

    source = model_source(spec, setting)
    directory = checked_dir(source, download=False if spec.local_files_only else None)
    variant = effective_variant(source, directory)
    log.info("loading %s from %s (%s)", spec.path, directory, spec.pipeline)
    try:
        if spec.pipeline in FLUX_PIPELINES:
            return load_pretrained_flux(str(directory), spec.pipeline, dtype, spec.use_safetensors)
        if spec.pipeline in instruct.INSTRUCT_PIPELINES:
            return instruct.load_pretrained(spec.pipeline, str(directory), dtype, variant, spec.use_safetensors)
        if spec.pipeline == "paint_by_example":
            return _load_paint_by_example(str(directory), dtype, variant, spec.use_safetensors)
        cls = StableDiffusionInpaintPipeline if spec.pipeline == "sd_inpaint" else StableDiffusionPipeline
        return cls.from_pretrained(str(directory), torch_dtype=dtype, variant=variant, use_safetensors=spec.use_safetensors,
                                   safety_checker=None, requires_safety_checker=False, local_files_only=True)
    except OSError as exc:  # a directory without the safetensors files of a component, or with broken ones
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsNotFoundError(f"{setting} config {spec.name!r}: cannot load {directory} ({reason}); "
                                   "python -m harness.models fetch/export write complete directories") from exc


def _load_paint_by_example(path: str, dtype: torch.dtype, variant: str | None, use_safetensors: bool):
    """Component by component: diffusers 0.42.1 moved the pipeline to `deprecated/`, and its
    `from_pretrained` can no longer resolve the `image_encoder` class named in the hub's model_index.json
    (nor in one it saved itself). The image encoder's config must be passed explicitly, otherwise
    transformers reads the `clip_vision_model` config as a full `CLIPConfig`."""
    from diffusers import AutoencoderKL, PaintByExamplePipeline, PNDMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    files_only = dict(local_files_only=True)
    weights = dict(torch_dtype=dtype, variant=variant, use_safetensors=use_safetensors, **files_only)
    vision = CLIPVisionConfig.from_pretrained(path, subfolder="image_encoder", **files_only)
    return PaintByExamplePipeline(
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae", **weights),
        unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", **weights),
        image_encoder=PaintByExampleImageEncoder.from_pretrained(path, subfolder="image_encoder", config=vision, **weights),
        scheduler=PNDMScheduler.from_pretrained(path, subfolder="scheduler", **files_only),
        feature_extractor=CLIPImageProcessor.from_pretrained(path, subfolder="feature_extractor", **files_only),
        safety_checker=None, requires_safety_checker=False)


_CACHE: dict[tuple[str, str, str], DiffusionModels] = {}


def load_models(cfg: Mapping[str, Any] | ModelSpec, setting: str = "model") -> DiffusionModels:
    """Load (or reuse) the pipeline a `model` config names. Each distinct config loads once per process.
    `setting`: the config key that chose it, for error messages (`features.dift_model`)."""
    spec = cfg if isinstance(cfg, ModelSpec) else ModelSpec.from_config(cfg, setting)
    device, dtype = spec.resolved_device(), spec.resolved_dtype()
    key = (spec.fingerprint(), str(device), str(dtype))
    if key in _CACHE:
        return _CACHE[key]
    if spec.source == "random" and spec.pipeline in FLUX_PIPELINES:
        pipe = build_random_flux(spec.arch, spec.seed, device, spec.pipeline, dtype)  # in dtype: no fp32 copy
    elif spec.source == "random" and spec.pipeline in instruct.INSTRUCT_PIPELINES:
        pipe = instruct.build_random(spec.pipeline, spec.arch, spec.seed, device, dtype)
    elif spec.source == "random":
        # Build directly on the target device: a full-size SD on the CPU first would cost ~20 s.
        pipe = build_random_pipeline(spec.arch, spec.seed, device, spec.pipeline)
    else:
        pipe = load_pretrained_pipeline(spec, dtype, setting)
    pipe = pipe.to(device)
    if dtype != torch.float32:  # a float32 build needs no cast (and diffusers warns on every cast)
        pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    if spec.channels_last and device.type == "cuda" and hasattr(pipe, "unet"):
        pipe.unet.to(memory_format=torch.channels_last)  # not the VAE: NHWC made its encode/decode slower
    models = DiffusionModels(spec=spec, pipe=pipe, device=device, dtype=dtype,
                             weights=None if spec.source == "random" else _weights_summary(spec, setting))
    _CACHE[key] = models
    return models


def _weights_summary(spec: ModelSpec, setting: str) -> str | None:
    from harness.models import hub, weights
    from harness.models.sources import model_source

    source = model_source(spec, setting)
    directory = hub.cached_dir(source)
    return weights.summary({setting: weights.entry(source, directory)})[setting] if directory else None


@contextlib.contextmanager
def no_model_cache():
    """Tests: load fresh models inside the block and forget them afterwards."""
    saved = dict(_CACHE)
    _CACHE.clear()
    try:
        yield
    finally:
        _CACHE.clear()
        _CACHE.update(saved)
