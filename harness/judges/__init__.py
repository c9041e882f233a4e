"""Vision-language-model judges: pinned, cached, repeatable.

A judge config (`conf/judge/*.yaml`, the run's `judge` section) names a backend and its model:

- `backend: local`: transformers Qwen2.5-VL on this machine (harness/judges/local.py): `model` a hub id
  (with `revision`), a local directory, or `random_tiny` / `random_7b` (random weights: tests, timing);
- `backend: served`: an OpenAI-compatible endpoint (harness/judges/served.py): `base_url`, `model`,
  `version` (declared), `api_key_env`, `timeout`, `retries`, `concurrency`.

Common fields: `decoding` (temperature 0 = greedy; else sampled, seeded per call), `repeats` (draws per
prompt; metrics report their mean and standard deviation), `batch_size` (requests per backend call).
Every answer is cached on disk (harness/judges/cache.py); prompts are versioned files
(harness/judges/templates/); parsing is harness/judges/parse.py. Metrics: harness/metrics/viescore.py;
the cross-method GScore: `python -m harness.judges gscore` (harness/judges/gscore.py).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from harness.judges.base import Decoding, JudgeReply, JudgeRequest, image_sha256
from harness.judges.cache import Judge

FIELDS = {"name", "backend", "model", "revision", "version", "seed", "min_pixels", "max_pixels", "batch_size",
          "repeats", "decoding", "base_url", "api_key_env", "timeout", "retries", "concurrency"}


def decoding(cfg: Mapping[str, Any]) -> Decoding:
    options = dict(cfg.get("decoding") or {})
    unknown = set(options) - set(Decoding.__dataclass_fields__)
    if unknown:
        raise ValueError(f"judge.decoding: unknown field(s) {sorted(unknown)}; valid: {sorted(Decoding.__dataclass_fields__)}")
    return Decoding(**options)


def repeats(cfg: Mapping[str, Any]) -> int:
    n = int(cfg.get("repeats", 1))
    if n < 1:
        raise ValueError(f"judge.repeats must be at least 1, got {n}")
    return n


def build_judge(cfg: Mapping[str, Any], device: str | torch.device = "cpu") -> Judge:
    """The judge a `judge` config describes (nothing is loaded until a call misses the cache)."""
    cfg = dict(cfg)
    unknown = set(cfg) - FIELDS
    if unknown:
        raise ValueError(f"judge config {cfg.get('name', '?')!r}: unknown field(s) {sorted(unknown)}; valid: {sorted(FIELDS)}")
    backend_name, model = cfg.get("backend", "local"), cfg.get("model")
    if not model:
        raise ValueError(f"judge config {cfg.get('name', '?')!r}: field 'model' is required")
    if backend_name == "served":
        from harness.judges.served import ServedBackend

        if not cfg.get("base_url"):
            raise ValueError(f"judge config {cfg.get('name', '?')!r}: field 'base_url' is required for backend served")
        backend: Any = ServedBackend(cfg["base_url"], model, str(cfg.get("version") or ""),
                                     api_key_env=cfg.get("api_key_env") or "OPENAI_API_KEY",
                                     timeout=float(cfg.get("timeout", 120)), retries=int(cfg.get("retries", 5)),
                                     concurrency=int(cfg.get("concurrency", 4)))
    elif backend_name == "local":
        from harness.judges import random_judge
        from harness.judges.local import LocalBackend

        sizes = {"min_pixels": cfg.get("min_pixels"), "max_pixels": cfg.get("max_pixels")}
        if model in random_judge.ARCHITECTURES:
            seed = int(cfg.get("seed", 0))
            dev = torch.device(device)
            dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
            pixels = random_judge.TINY_PIXELS if model == "random_tiny" else {}
            backend = LocalBackend(model, version=str(cfg.get("version") or ""), device=dev,
                                   loader=lambda: random_judge.build(model, seed, dev, dtype),
                                   identity_name=random_judge.identity_name(model, seed), pixels=pixels)
        else:
            backend = LocalBackend(model, revision=cfg.get("revision"), version=str(cfg.get("version") or ""),
                                   device=device, pixels=sizes)
    else:
        raise ValueError(f"judge config {cfg.get('name', '?')!r}: field 'backend' must be local or served, got {backend_name!r}")
    return Judge(backend, str(cfg.get("name") or model), batch_size=int(cfg.get("batch_size", 8)))


__all__ = ["Decoding", "Judge", "JudgeReply", "JudgeRequest", "build_judge", "decoding", "image_sha256", "repeats"]
