"""The local backend: a transformers Qwen2.5-VL model (`Qwen2_5_VLForConditionalGeneration` + its processor)
on this machine, bf16 on a GPU (float32 on the CPU, where bf16 matmuls are slow and inexact).

Pinning: `revision` is a commit hash, or a branch/tag that is resolved to the commit of the snapshot in the
local hub cache before any call; a model that is neither pinned nor downloaded is refused, so every cached
answer names the exact weights it came from. A local directory is identified by its path and the SHA-256
of its `config.json` and weight index, plus the `version` the config declares.

The model is loaded on the first call that the cache cannot answer: a rerun that finds every answer
cached never loads it. Greedy requests run in batches (left padding); sampled ones one at a time, each with
its own seeded generator, so that a draw does not depend on its batch.
"""
from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from harness.judges.base import JudgeRequest

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def resolve_revision(model: str, revision: str | None) -> str:
    """The commit hash behind `revision` for hub model `model` (no network: the local hub cache)."""
    if revision and _COMMIT.match(revision):
        return revision
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(model, revision=revision or "main", local_files_only=True)
    except Exception as exc:
        raise ValueError(f"judge model {model!r} revision {revision or 'main'!r} is not pinned to a commit and is not in "
                         f"the local hub cache ({type(exc).__name__}); set judge.revision to a 40-hex commit hash, or "
                         "download the model first (huggingface-cli download)") from None
    return Path(path).name


def _directory_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json", "preprocessor_config.json"):
        if (path / name).is_file():
            digest.update(name.encode() + b"\0" + (path / name).read_bytes())
    return digest.hexdigest()[:16]


class LocalBackend:
    """`loader()` returns (model, processor) on first use; `describe` is the identity without the weights."""

    def __init__(self, model: str, revision: str | None = None, version: str = "", device: str | torch.device = "cpu",
                 pixels: Mapping[str, int | None] | None = None, loader: Callable[[], tuple[Any, Any]] | None = None, identity_name: str | None = None) -> None:
        self.model_id = model
        self.revision = revision
        self.version = version
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        # the processor's image-size limits (`min_pixels`, `max_pixels`; None = the checkpoint's own)
        self.min_pixels, self.max_pixels = (pixels or {}).get("min_pixels"), (pixels or {}).get("max_pixels")
        self._loader = loader
        self._identity_name = identity_name
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"backend": "local", "dtype": str(self.dtype).replace("torch.", ""),
                                 "min_pixels": self.min_pixels, "max_pixels": self.max_pixels, "version": self.version}
        if self._identity_name is not None:
            return {**ident, "model": self._identity_name}
        path = Path(self.model_id).expanduser()
        if path.is_dir():
            return {**ident, "model": str(path.resolve()), "files_sha256": _directory_digest(path)}
        return {**ident, "model": self.model_id, "revision": resolve_revision(self.model_id, self.revision)}

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            if self._loader is not None:
                model, processor = self._loader()
            else:
                from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

                revision = None if Path(self.model_id).expanduser().is_dir() else self.identity()["revision"]
                sizes = {k: v for k, v in (("min_pixels", self.min_pixels), ("max_pixels", self.max_pixels)) if v}
                processor = AutoProcessor.from_pretrained(self.model_id, revision=revision, **sizes)
                model = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.model_id, revision=revision,
                                                                           dtype=self.dtype)
            processor.tokenizer.padding_side = "left"
            self._loaded = (model.to(self.device, self.dtype).eval(), processor)
        return self._loaded

    def generate(self, requests: list[JudgeRequest], seeds: list[int]) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            model, processor = self._load()
            if all(r.decoding.greedy for r in requests):
                return self._generate(model, processor, requests, None)
            return [self._generate(model, processor, [r], seed)[0] for r, seed in zip(requests, seeds)]

    def _generate(self, model: Any, processor: Any, requests: list[JudgeRequest],
                  seed: int | None) -> list[tuple[str, dict[str, Any]]]:
        texts = [processor.apply_chat_template(messages(r), tokenize=False, add_generation_prompt=True) for r in requests]
        images = [np.array(im, dtype=np.uint8) for r in requests for im in r.images]  # writable copies for torch
        inputs = processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        d = requests[0].decoding
        # exactly the declared decoding: the checkpoint's generation_config extras (Qwen2.5-VL-7B-Instruct sets
        # repetition_penalty 1.05 and sampling defaults) would change answers without appearing in any key
        options: dict[str, Any] = {"max_new_tokens": d.max_new_tokens, "do_sample": not d.greedy, "repetition_penalty": 1.0}
        if not d.greedy:
            options.update(temperature=d.temperature, top_p=d.top_p, top_k=d.top_k or 0)
        else:  # the checkpoint's generation_config may set sampling defaults: greedy means none of them
            options.update(temperature=None, top_p=None, top_k=None)
        devices = [torch.cuda.current_device() if self.device.index is None else self.device.index] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            out = model.generate(**inputs, **options)
        new = out[:, inputs["input_ids"].shape[1]:]
        answers = processor.batch_decode(new, skip_special_tokens=True)
        eos = processor.tokenizer.eos_token_id
        return [(text, {"new_tokens": int((row != processor.tokenizer.pad_token_id).sum()),
                        "prompt_tokens": int(inputs["attention_mask"][i].sum()), "batch": len(requests),
                        "finished": bool((row == eos).any())})
                for i, (text, row) in enumerate(zip(answers, new))]


def messages(request: JudgeRequest) -> list[dict[str, Any]]:
    """The chat messages of one request for a processor's chat template: the text, then one image slot each."""
    return [{"role": "user", "content": [{"type": "text", "text": request.text},
                                         *({"type": "image"} for _ in request.images)]}]
