"""Resolve a `model` config into a Stable Diffusion pipeline, once per process.

Three sources, one code path afterwards:
- `pretrained`: `from_pretrained` with a hub id or a local directory (real weights, for users);
- `random`: an exact architecture from `architectures.py` with seeded random weights, built offline
  (full size on the GPU for timing, `tiny` on the CPU for tests);
The components are handed to methods and metrics as a `DiffusionModels` bundle that also says what it is
(`identity`), so every score row can name the network that produced it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSpec:
    """What to load. `path` is a hub id or local directory for `source=pretrained`; `arch` and `seed`
    select the random build for `source=random`."""

    name: str
    source: str = "random"
    arch: str = "tiny"
    path: str | None = None
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    local_files_only: bool = False
    # NHWC convolutions: ~1.3× faster UNet calls on Hopper in fp16 (benchmarks/NOTES.md), but other cuDNN
    # kernels, so outputs differ from the reference code by fp16 rounding: part of the store key.
    channels_last: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ModelSpec":
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in dict(cfg).items() if k in known}
        data["extra"] = {k: v for k, v in dict(cfg).items() if k not in known}
        if data.get("source") not in ("random", "pretrained"):
            raise ValueError(f"model config {data.get('name')!r}: field 'source' must be 'random' or 'pretrained'")
        if data["source"] == "pretrained" and not data.get("path"):
            raise ValueError(f"model config {data.get('name')!r}: field 'path' is required for source=pretrained")
        if data.get("dtype", "float32") not in DTYPES:
            raise ValueError(f"model config {data.get('name')!r}: field 'dtype' must be one of {sorted(DTYPES)}")
        return cls(**data)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        # Half precision on the CPU is slow and partly unsupported; the record says what actually ran.
        if self.resolved_device().type == "cpu":
            return torch.float32
        return DTYPES[self.dtype]

    @property
    def identity(self) -> str:
        if self.source == "pretrained":
            return f"pretrained:{self.path}"
        return f"random:{self.arch}:seed{self.seed}"

    def fingerprint(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class DiffusionModels:
    """The loaded components plus what they are."""

    spec: ModelSpec
    pipe: Any  # diffusers.StableDiffusionPipeline
    device: torch.device
    dtype: torch.dtype

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
        if self.spec.channels_last and self.device.type == "cuda":
            out["memory_format"] = "channels_last"
        return out

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """CLIP last hidden state of `prompt` (1, 77, C): the text condition every SD method here uses."""
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids)[0].to(self.dtype)


def build_random_pipeline(arch: str, seed: int, device: torch.device | str = "cpu"):
    """An SD pipeline of architecture `arch` with weights drawn after `torch.manual_seed(seed)`."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from harness.models.architectures import ARCHITECTURES, PNDM_SCHEDULER
    from harness.models.tokenizer import clip_tokenizer

    try:
        spec = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown random architecture {arch!r}; valid: {sorted(ARCHITECTURES)}") from None
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**spec["unet"])
        vae = AutoencoderKL(**spec["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"]))
    scheduler = PNDMScheduler(**PNDM_SCHEDULER, prediction_type=spec["prediction_type"])
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(spec["pad_token"]),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe


_CACHE: dict[tuple[str, str, str], DiffusionModels] = {}


def load_models(cfg: Mapping[str, Any] | ModelSpec) -> DiffusionModels:
    """Load (or reuse) the pipeline a `model` config names. Each distinct config loads once per process."""
    spec = cfg if isinstance(cfg, ModelSpec) else ModelSpec.from_config(cfg)
    device, dtype = spec.resolved_device(), spec.resolved_dtype()
    key = (spec.fingerprint(), str(device), str(dtype))
    if key in _CACHE:
        return _CACHE[key]
    if spec.source == "random":
        # Build directly on the target device: a full-size SD on the CPU first would cost ~20 s.
        pipe = build_random_pipeline(spec.arch, spec.seed, device)
    else:
        from diffusers import StableDiffusionPipeline

        log.info("loading %s", spec.path)
        pipe = StableDiffusionPipeline.from_pretrained(spec.path, torch_dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False,
                                                       local_files_only=spec.local_files_only)
    pipe = pipe.to(device)
    if dtype != torch.float32:  # a float32 build needs no cast (and diffusers warns on every cast)
        pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    if spec.channels_last and device.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    models = DiffusionModels(spec=spec, pipe=pipe, device=device, dtype=dtype)
    _CACHE[key] = models
    return models


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
