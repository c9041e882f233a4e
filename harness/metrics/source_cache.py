"""Source-image features computed once and reused across methods, variants and reruns (`features.source_cache`).

A leaderboard of k methods scores k edits of every source image; the source's DIFT features depend only on
(the image bytes, the prompt, the protocol, the network and the seed), yet the mean-distance protocols
featurise source and edit together, so each source is featurised k times. With `features.source_cache:
true` the two images go through the featuriser one after the other instead (same generator stream: the
source's draws first, the edit's continue it), and the source's features and the generator state after
them are kept: in memory for the process and on disk under `<cache_dir>/source_features/`, keyed like the
score caches (metric id and version, the features settings' key with weight hashes and kernel choices,
the image bytes, the prompt). A hit restores the generator state and featurises only the edit, so a score
is bit-identical whether its source came from the cache or not (tests/test_feature_reuse.py).

Why opt-in: two passes of one image each cost more than one pass of both (16 ensemble copies fill the GPU
better; benchmarks/NOTES.md), so a single-method run is slower with it; from two methods on the same
samples it saves time. The two settings round differently (batch composition), hence different score keys.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness.paths import cache_dir

MEMORY_ENTRIES = 64  # ≈ 6 MB each at 768² (1280 × 48 × 48 fp16): a few hundred MB of device memory at most


def enabled(context: Any) -> bool:
    return bool(context.features.get("source_cache", False))


def source_key(metric: Any, image: np.ndarray, prompt: str, extra: dict[str, Any]) -> str:
    payload = {"metric": metric.id, "version": metric.version, "features": metric.context.key,
               "image_sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
               "shape": list(image.shape), "prompt": prompt, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


class SourceFeatureCache:
    """Memory (LRU) and disk store of (features, generator state after them) by `source_key`."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.memory: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.hits = {"memory": 0, "disk": 0, "miss": 0}
        self.lock = threading.Lock()  # the scorer thread and the score stage may share a context

    def _path(self, key: str) -> Path:
        directory = self.directory or cache_dir() / "source_features"
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{key}.safetensors"

    def get(self, key: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        with self.lock:
            return self._get(key, device)

    def _get(self, key: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        if key in self.memory:
            self.memory.move_to_end(key)
            self.hits["memory"] += 1
            return self.memory[key]
        path = self._path(key)
        if path.exists():
            from safetensors.torch import load_file

            try:
                stored = load_file(str(path))
            except Exception:  # a torn or foreign file is a miss; it is rewritten below
                stored = None
            if stored is not None and {"features", "generator_state"} <= set(stored):
                self.hits["disk"] += 1
                return self._remember(key, stored["features"].to(device), stored["generator_state"])
        self.hits["miss"] += 1
        return None

    def put(self, key: str, features: torch.Tensor, state: torch.Tensor) -> None:
        from safetensors.torch import save

        from harness.store import atomic_write_bytes

        with self.lock:
            self._remember(key, features, state)
        atomic_write_bytes(self._path(key), save({"features": features.detach().cpu().contiguous(),
                                                  "generator_state": state.cpu().contiguous()}))

    def _remember(self, key: str, features: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.memory[key] = (features, state)
        while len(self.memory) > MEMORY_ENTRIES:
            self.memory.popitem(last=False)
        return features, state


def shared_cache(context: Any) -> SourceFeatureCache:
    return context.shared(("source_features",), SourceFeatureCache)


def featurize_pair(metric: Any, source: np.ndarray, prompt: str, extra: dict[str, Any],
                   featurize: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                   pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(source features, edit features) of the (2, …) `pair` [source, edit]: in one call, or, with
    `features.source_cache`, one image at a time with the source's from the cache when there.
    `featurize(images, generator)`; `extra`: what else decides the source's features (protocol settings)."""
    generator = metric.generator()
    if not enabled(metric.context):
        both = featurize(pair, generator)
        return both[:1], both[1:]
    cache = shared_cache(metric.context)
    key = source_key(metric, source, prompt, extra)
    hit = cache.get(key, pair.device)
    if hit is None:
        features = featurize(pair[:1], generator)
        cache.put(key, features, generator.get_state())
    else:
        features, state = hit
        generator.set_state(state)
    return features, featurize(pair[1:], generator)
