"""What a `model` config asks for (`ModelSpec`), checked without loading anything.

Kept apart from the provider (harness/models/provider.py), which builds and loads the networks, so that code
which only reads configs — the weights lock (harness/models/weights.py), planning — needs no loader.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PIPELINES = ("stable_diffusion", "sd_inpaint", "paint_by_example", "flux", "flux_kontext", "instruct_pix2pix",
             "qwen_image_edit")


@dataclass(frozen=True)
class ModelSpec:
    """What to load. `path` is a hub id or local directory for `source=pretrained`; `arch` and `seed`
    select the random build for `source=random`.

    Real weights: `published_as` is the hub id the paper used (several were removed from the hub since;
    `path` names the copy actually loaded, harness/models/hub.py); `revision` pins a hub commit (null =
    the repository's current `main`); `variant` selects the hub's half-size files (`fp16`) where the
    protocol runs in float16; `use_safetensors: false` loads pickled `.bin` weights, for repositories whose
    main branch has no safetensors files."""

    name: str
    source: str = "random"
    arch: str = "tiny"
    path: str | None = None
    published_as: str | None = None
    revision: str | None = None
    variant: str | None = None
    use_safetensors: bool = True
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    local_files_only: bool = False
    pipeline: str = "stable_diffusion"
    # NHWC UNet convolutions: 1.2–1.3× faster UNet calls on Hopper in fp16 (benchmarks/NOTES.md), but other
    # cuDNN kernels, so outputs differ from the reference code by fp16 rounding: part of the store key. The
    # VAE stays NCHW (measured slower in NHWC: decode 24 → 30 ms on an H100).
    channels_last: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], setting: str = "model") -> "ModelSpec":
        """Checked construction; errors name the config (its `name`), the `setting` that chose it and the
        field. Unknown fields are refused: a misspelt `revison:` must not silently load `main`."""
        data = dict(cfg)
        where = f"{setting} config {data.get('name')!r}"
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; valid: {', '.join(cls.__dataclass_fields__)}")
        if data.get("source") not in ("random", "pretrained"):
            raise ValueError(f"{where}: field 'source' must be 'random' or 'pretrained'")
        if data["source"] == "pretrained" and not data.get("path"):
            raise ValueError(f"{where}: field 'path' is required for source=pretrained")
        if data.get("dtype", "float32") not in DTYPES:
            raise ValueError(f"{where}: field 'dtype' must be one of {sorted(DTYPES)}")
        if data.get("pipeline", "stable_diffusion") not in PIPELINES:
            raise ValueError(f"{where}: field 'pipeline' must be one of {list(PIPELINES)}")
        for key in ("revision", "variant", "published_as"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{where}: field {key!r} must be a string or null, got {data[key]!r}")
        return cls(**data)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    @property
    def memory_format(self) -> str | None:
        """What `channels_last` changes where it takes effect (CUDA only), for records and store keys."""
        return "channels_last (unet)" if self.channels_last and self.resolved_device().type == "cuda" else None

    def resolved_dtype(self) -> torch.dtype:
        # Half precision on the CPU is slow and partly unsupported; the record says what actually ran.
        if self.resolved_device().type == "cpu":
            return torch.float32
        return DTYPES[self.dtype]

    @property
    def identity(self) -> str:
        if self.source == "pretrained":
            return f"pretrained:{self.path}" + (f"@{self.revision}" if self.revision else "")
        arch = self.arch if self.pipeline == "stable_diffusion" else f"{self.pipeline}-{self.arch}"
        return f"random:{arch}:seed{self.seed}"

    def fingerprint(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]
