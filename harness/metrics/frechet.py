"""Fréchet distance between Gaussians fitted to two feature sets, feature extraction in batches, and the
cache of reference statistics. Used by `fid@pbe` (CLIP features) and `fid_inception@pbe` (Inception).

- Statistics: mean and `np.cov(rowvar=False)` in float64, as pytorch-fid; a set needs at least 2 images
  (the covariance of one image is undefined), otherwise it is refused.
- `frechet_distance` = ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2·Tr (Σ₁Σ₂)^½ with `scipy.linalg.sqrtm` and
  pytorch-fid's safeguards: a non-finite square root is retried with 1e-6 added to both diagonals; an
  imaginary part above 1e-3 on the diagonal is an error, otherwise the real part is kept.
- Folders are read as pytorch-fid reads them: the files directly inside (no recursion) with the extensions
  bmp jpg jpeg pgm png ppm tif tiff webp in lower case, sorted; JPEG files are warned about (lossy inputs
  shift FID). Batches group consecutive images of equal input shape, so a set of mixed sizes works and the
  features do not depend on the batch size beyond float rounding.
- `folder_statistics` caches (μ, Σ) under `cache_dir()/frechet_stats/`, keyed by the files' content
  fingerprint (relative names and SHA-256), the extractor's identity and its preprocessing: a 40k-image
  reference set is embedded once, and any change to a file, the network or the resize rule recomputes it.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from harness.store import file_sha256
from harness.paths import cache_dir
from harness.store import atomic_write_bytes

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")  # pytorch-fid's set
JPEG_EXTENSIONS = (".jpg", ".jpeg")
STATS_VERSION = 1  # bump when the cached statistics' computation changes


class FeatureExtractor(Protocol):
    """A network that embeds images. `transform` must be picklable (it runs in DataLoader workers)."""

    identity: str  # which weights: a file hash, a hub id or "random-seedN"
    preprocess: str  # the input rule (resize, crop, normalisation): part of the statistics cache key
    dim: int
    transform: Callable[[Image.Image], torch.Tensor]

    def embed(self, batch: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) → (B, dim)
        ...


@dataclass(frozen=True)
class GaussianStats:
    mu: np.ndarray
    sigma: np.ndarray
    n: int


def statistics(features: np.ndarray, what: str = "feature set") -> GaussianStats:
    """Mean and unbiased covariance (rows = images) in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{what}: expected an (images, dims) array, got shape {features.shape}")
    if len(features) < 2:
        raise ValueError(f"{what}: a Fréchet distance needs at least 2 images per set, got {len(features)}")
    return GaussianStats(features.mean(axis=0), np.cov(features, rowvar=False), len(features))


def frechet_distance(a: GaussianStats, b: GaussianStats, eps: float = 1e-6) -> float:
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(a.mu), np.atleast_1d(b.mu)
    sigma1, sigma2 = np.atleast_2d(a.sigma), np.atleast_2d(b.sigma)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))  # `disp` is deprecated; the result is the same array
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: singular product; adding %g to the diagonal of both covariances", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(Σ₁Σ₂)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# ------------------------------------------------------------------------------------ feature extraction


def embed_tensors(extractor: FeatureExtractor, tensors: Iterable[torch.Tensor], batch_size: int) -> np.ndarray:
    """Embed preprocessed image tensors in order, batching consecutive tensors of equal shape."""
    out: list[np.ndarray] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            with torch.inference_mode():
                out.append(extractor.embed(torch.stack(pending)).float().cpu().numpy())
            pending.clear()

    for tensor in tensors:
        if pending and (len(pending) >= batch_size or pending[0].shape != tensor.shape):
            flush()
        pending.append(tensor)
    flush()
    return np.concatenate(out) if out else np.zeros((0, extractor.dim), np.float32)


def embed_arrays(extractor: FeatureExtractor, images: Sequence[np.ndarray], batch_size: int = 50) -> np.ndarray:
    """Embed uint8 H×W×3 arrays exactly as if they had been read from lossless files."""
    return embed_tensors(extractor, (extractor.transform(Image.fromarray(a)) for a in images), batch_size)


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, files: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as image:
            return self.transform(image)


def embed_files(extractor: FeatureExtractor, files: Sequence[Path], batch_size: int = 50,
                num_workers: int | None = None) -> np.ndarray:
    """Embed image files in order; decoding and preprocessing run in `num_workers` DataLoader workers
    (default min(8, available CPUs), pytorch-fid's default)."""
    if num_workers is None:
        num_workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(_ImageFiles(files, extractor.transform), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=list)
    return embed_tensors(extractor, (t for batch in loader for t in batch), batch_size)


# ------------------------------------------------------------------------------------------- folders


def list_images(folder: str | Path) -> list[Path]:
    """The image files pytorch-fid would read from `folder`, sorted; warns about JPEG files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix[1:] in IMAGE_EXTENSIONS)
    jpegs = sum(p.suffix in JPEG_EXTENSIONS for p in files)
    if jpegs:
        warnings.warn(f"{folder}: {jpegs} of {len(files)} images are JPEG; lossy inputs shift FID (use PNG)",
                      stacklevel=2)
    return files


def fingerprint_files(files: Sequence[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root)}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class FolderStats:
    stats: GaussianStats
    folder: str
    fingerprint: str
    cached: bool

    def describe(self) -> dict[str, Any]:
        return {"folder": self.folder, "images": self.stats.n, "fingerprint_sha256": self.fingerprint}


def folder_statistics(folder: str | Path, extractor: FeatureExtractor, batch_size: int = 50,
                      num_workers: int | None = None) -> FolderStats:
    """(μ, Σ) of the images in `folder`, from the cache when the same files were embedded by the same
    extractor with the same preprocessing before."""
    folder = Path(folder).resolve()
    files = list_images(folder)
    if len(files) < 2:
        raise ValueError(f"{folder}: a Fréchet distance needs at least 2 images per set, found {len(files)}")
    fingerprint = fingerprint_files(files, folder)
    key = hashlib.sha256(json.dumps([STATS_VERSION, fingerprint, extractor.identity, extractor.preprocess]).encode())
    path = cache_dir() / "frechet_stats" / f"{key.hexdigest()[:32]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            stats = GaussianStats(data["mu"], data["sigma"], int(data["n"]))
        log.info("reference statistics of %s from the cache (%s)", folder, path)
        return FolderStats(stats, str(folder), fingerprint, cached=True)
    log.info("embedding %d images of %s with %s", len(files), folder, extractor.identity)
    stats = statistics(embed_files(extractor, files, batch_size, num_workers), str(folder))
    buffer = io.BytesIO()
    meta = json.dumps({"folder": str(folder), "fingerprint": fingerprint, "extractor": extractor.identity,
                       "preprocess": extractor.preprocess, "version": STATS_VERSION})
    np.savez(buffer, mu=stats.mu, sigma=stats.sigma, n=stats.n, meta=np.array(meta))
    atomic_write_bytes(path, buffer.getvalue())
    return FolderStats(stats, str(folder), fingerprint, cached=False)
