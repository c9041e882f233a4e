"""The judge with its on-disk answer cache: every call is made at most once.

A call's key is the SHA-256 of: the judge's identity (backend, model and pinned revision or served model
name, declared version, dtype and image-size limits), the template id and the template file's SHA-256, the
rendered text's SHA-256, each image's pixel SHA-256 in order, the decoding settings and the repetition index.
The answer is stored under `<cache>/<key[:2]>/<key>.json` with that key material beside it, so a cache
entry says what it answers. Reruns, report regeneration and re-scoring of unchanged outputs therefore make
no judge call; a changed template file, image, judge or decoding setting is a different key.

The cache lives in `$EDITLAB_JUDGE_CACHE`, else `<editlab cache>/judge` (harness/paths.py): outside any run
folder, so that two runs of the same samples share it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from harness.judges.base import Backend, JudgeReply, JudgeRequest
from harness.store import atomic_write_json

log = logging.getLogger("harness")


def default_cache_dir() -> Path:
    from harness.paths import cache_dir

    root = os.environ.get("EDITLAB_JUDGE_CACHE")
    return Path(root) if root else cache_dir() / "judge"


class Judge:
    """A backend behind the answer cache. `calls` counts answers the backend produced in this process,
    `cache_hits` answers read from disk; `batch_size` caps the requests handed to the backend at once."""

    def __init__(self, backend: Backend, name: str, cache_dir: Path | None = None, batch_size: int = 8) -> None:
        self.backend = backend
        self.name = name
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.batch_size = max(1, int(batch_size))
        self.calls = 0
        self.cache_hits = 0
        self._identity: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = dict(self.backend.identity())
        return self._identity

    def key_material(self, request: JudgeRequest) -> dict[str, Any]:
        return {"judge": self.identity, "template": {"id": request.template_id, "sha256": request.template_sha256},
                "text_sha256": hashlib.sha256(request.text.encode()).hexdigest(), "images": list(request.image_hashes),
                "decoding": request.decoding.as_dict(), "repetition": request.repetition}

    def key(self, request: JudgeRequest) -> str:
        return hashlib.sha256(json.dumps(self.key_material(request), sort_keys=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _read(self, key: str) -> JudgeReply | None:
        """The cached answer, or None when absent or unreadable (a half-written file never exists: writes are
        atomic; an unreadable one is asked again and overwritten)."""
        try:
            entry = json.loads(self._path(key).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            return None
        return JudgeReply(entry["text"], cached=True, key=key, meta=dict(entry.get("meta") or {}))

    def ask(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        """Answers in request order: from the cache where present, else from the backend (then cached)."""
        keys = [self.key(r) for r in requests]
        replies: list[JudgeReply | None] = [self._read(key) for key in keys]
        missing = [i for i, reply in enumerate(replies) if reply is None]
        with self._lock:
            self.cache_hits += len(requests) - len(missing)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            # a sampled call's generator seed: from the call's own key, so a draw does not depend on its batch
            seeds = [int(keys[i][:8], 16) for i in chunk]
            t0 = time.perf_counter()
            answers = self.backend.generate([requests[i] for i in chunk], seeds)
            seconds = (time.perf_counter() - t0) / len(chunk)
            for i, (text, meta) in zip(chunk, answers):
                atomic_write_json(self._path(keys[i]), {"key": self.key_material(requests[i]), "text": text,
                                                        "meta": meta, "seconds": seconds})
                replies[i] = JudgeReply(text, cached=False, key=keys[i], seconds=seconds, meta=meta)
            with self._lock:
                self.calls += len(chunk)
        return [r for r in replies if r is not None]
