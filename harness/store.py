"""The run store: one lossless PNG and one JSON record per (dataset, method variant, sample).

Layout: `<out_dir>/store/<dataset>/<method_key>/<category>/<name>.png|.json`, where `method_key` is the
method name plus a hash of everything that changes its output (method config, model identity and dtype),
so variants of a sweep never overwrite each other. `method.json` beside the samples holds that
description in full. Set-level metrics (FID) keep their per-sample features and their set values in
`_sets/` beside the samples.

Every write is atomic (temporary file in the same folder, fsync, rename). The PNG is written before the
record, and the record carries the PNG's SHA-256: a record is trusted only if it says `ok` and the file it
names exists with that hash. So a crash at any moment leaves nothing a rerun would trust by mistake.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import Image


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stable_hash(obj: Any, length: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:length]


def sample_relpath(sample_id: str) -> Path:
    """`dataset/category/name` → `category/name` inside the dataset folder; refuses path tricks."""
    parts = sample_id.split("/")[1:]
    if not parts or any(p in ("", ".", "..") or os.sep in p for p in parts):
        raise ValueError(f"invalid sample id {sample_id!r}")
    return Path(*parts)


class MethodStore:
    """The folder of one method variant on one dataset."""

    def __init__(self, root: Path, dataset: str, method_key: str) -> None:
        self.dataset = dataset
        self.method_key = method_key
        self.dir = Path(root) / "store" / dataset / method_key

    def image_path(self, sample_id: str) -> Path:
        return self.dir / sample_relpath(sample_id).with_suffix(".png")

    def record_path(self, sample_id: str) -> Path:
        return self.dir / sample_relpath(sample_id).with_suffix(".json")

    def scores_path(self, sample_id: str) -> Path:
        return self.dir / sample_relpath(sample_id).with_suffix(".scores.json")

    def write_description(self, description: Mapping[str, Any]) -> None:
        path = self.dir / "method.json"
        if not path.exists():
            atomic_write_json(path, description)

    def description(self) -> dict[str, Any]:
        return json.loads((self.dir / "method.json").read_text())

    def save_ok(self, sample_id: str, image: np.ndarray, record: dict[str, Any]) -> dict[str, Any]:
        data = png_bytes(image)
        path = self.image_path(sample_id)
        atomic_write_bytes(path, data)
        record = dict(record, status="ok", output={"file": path.name, "sha256": sha256_bytes(data),
                                                   "size": [int(image.shape[1]), int(image.shape[0])]})
        atomic_write_json(self.record_path(sample_id), record)
        return record

    def save_failed(self, sample_id: str, record: dict[str, Any]) -> dict[str, Any]:
        record = dict(record, status="failed")
        atomic_write_json(self.record_path(sample_id), record)
        return record

    def load_record(self, sample_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.record_path(sample_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def trusted_record(self, sample_id: str) -> dict[str, Any] | None:
        """The record if it says ok and its PNG exists with the recorded hash; else None."""
        record = self.load_record(sample_id)
        if not record or record.get("status") != "ok":
            return None
        try:
            data = self.image_path(sample_id).read_bytes()
        except FileNotFoundError:
            return None
        return record if sha256_bytes(data) == record.get("output", {}).get("sha256") else None

    def load_image(self, sample_id: str) -> np.ndarray:
        with Image.open(self.image_path(sample_id)) as im:
            return np.asarray(im.convert("RGB"))

    def load_scores(self, sample_id: str) -> dict[str, Any]:
        try:
            return json.loads(self.scores_path(sample_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def save_scores(self, sample_id: str, scores: Mapping[str, Any]) -> None:
        atomic_write_json(self.scores_path(sample_id), dict(scores))

    def load_set_scores(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "_sets" / "scores.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def save_set_scores(self, scores: Mapping[str, Any]) -> None:
        atomic_write_json(self.dir / "_sets" / "scores.json", dict(scores))

    def load_set_features(self, name: str) -> dict[str, np.ndarray]:
        """Cached per-sample features of a set metric, keyed by (sample id, output hash) digests."""
        try:
            with np.load(self.dir / "_sets" / f"{name}.npz", allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (FileNotFoundError, ValueError, OSError):
            return {}

    def save_set_features(self, name: str, features: Mapping[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **features)
        atomic_write_bytes(self.dir / "_sets" / f"{name}.npz", buffer.getvalue())


def iter_method_stores(root: Path) -> Iterator[MethodStore]:
    """Every method variant folder of a store (all datasets), in a stable order."""
    base = Path(root) / "store"
    if not base.is_dir():
        return
    for dataset_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for method_dir in sorted(p for p in dataset_dir.iterdir() if (p / "method.json").is_file()):
            yield MethodStore(Path(root), dataset_dir.name, method_dir.name)
