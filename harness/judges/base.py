"""What a judge call is: a prompt text with images and decoding settings, and the raw answer that comes back.

A backend (`local`: transformers on this machine; `served`: an OpenAI-compatible endpoint) turns a batch of
`JudgeRequest`s into answer texts. It never parses: parsing belongs to the metric (harness/judges/parse.py),
so that the raw text is what the cache and the score record keep.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np


def image_sha256(image: np.ndarray) -> str:
    """SHA-256 of a uint8 H×W×3 image's pixels (shape header + raw bytes): the image part of a cache key.
    Pixels rather than PNG bytes, because PNG encoders differ across Pillow versions for the same pixels."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    digest = hashlib.sha256(f"{'x'.join(map(str, image.shape))}:uint8:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Decoding:
    """How the judge decodes. `temperature` 0 is greedy (no sampling; `seed` unused); above 0 samples, and each
    call's generator is seeded from `seed` and the call's own key, so a draw does not depend on what was
    asked before it or beside it in a batch."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    max_new_tokens: int = 512
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JudgeRequest:
    """One prompt: `text` (the rendered template) and `images` in the order the template names them; the
    text comes first in the message, then the images (VIEScore's and GoodDrag's order). `repetition` is the
    draw index (0 … repeats-1), part of the cache key and of a sampled call's seed."""

    template_id: str
    template_sha256: str
    text: str
    images: tuple[np.ndarray, ...]
    decoding: Decoding
    repetition: int = 0
    image_hashes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.image_hashes:
            object.__setattr__(self, "image_hashes", tuple(image_sha256(im) for im in self.images))


@dataclass
class JudgeReply:
    """A judge's raw answer. `cached`: read from the on-disk cache (no call made); `meta`: what the backend
    reported (served: the model name the server answered with, its fingerprint, token counts)."""

    text: str
    cached: bool = False
    key: str = ""
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A judge backend: its identity (what changes its answers) and a batched call."""

    def identity(self) -> dict[str, Any]: ...

    def generate(self, requests: list[JudgeRequest], seeds: list[int]) -> list[tuple[str, dict[str, Any]]]: ...
