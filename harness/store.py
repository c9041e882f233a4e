"""The run store: one lossless PNG and one JSON record per (dataset, method variant, sample).

Layout: `<out_dir>/store/<dataset>/<method_key>/<category>/<name>.png|.json`, where `method_key` is the
method name plus a hash of everything that changes its output (method config, model identity and dtype),
so variants of a sweep never overwrite each other. `method.json` beside the samples holds that
description in full. Set-level metrics (FID) keep their per-sample features and their set values in
`_sets/` beside the samples.

Every write is atomic (temporary file in the same folder, fsync, rename). The PNG is written before the
record, and the record carries the PNG's SHA-256: a record is trusted only if it says `ok`, names its own
sample, and the file it names exists with that hash. So a crash at any moment (SIGKILL included) leaves
nothing a rerun would trust by mistake: at worst a `.<name>.*.tmp` file that no reader ever opens and the
next writer of that sample deletes.

Concurrency: every write of a sample's files happens while holding an advisory lock on
`.<name>.lock` beside them (`fcntl.flock`, released by the kernel when the holder dies, so a killed run
never leaves a stale lock). Shards write disjoint samples; two processes that run the same samples take
turns per sample, and the second finds the first's trusted record instead of redoing it. Lock files stay
in place on purpose: deleting a lock file that another process is about to open would split the lock.
flock works on local filesystems and on NFSv4 (Linux emulates it with POSIX locks there).
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
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


def decode_png(data: bytes) -> np.ndarray:
    """Stored PNG bytes → uint8 H×W×3."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (weights files are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stable_hash(obj: Any, length: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:length]


class InvalidSampleId(ValueError):
    """A sample id that cannot name a file inside the store (path tricks, empty parts, control characters)."""


def sample_relpath(sample_id: str) -> Path:
    """`dataset/category/name` → `category/name` inside the dataset folder.

    Sample ids come from dataset files (folder names, JSON keys), so they are untrusted: an id that could
    address anything outside the store (`..`, an absolute path, a backslash, an empty part) or that holds
    control characters is refused, which keeps every write of a run under `out_dir`.
    """
    parts = sample_id.split("/") if isinstance(sample_id, str) else []
    if (len(parts) < 2 or any(p in ("", ".", "..") or "\\" in p for p in parts)
            or any(ord(c) < 32 or c == "\x7f" for c in sample_id)):
        raise InvalidSampleId(f"invalid sample id {sample_id!r}: expected 'dataset/[category/]name' without "
                              "empty, '.' or '..' parts, backslashes or control characters")
    return Path(*parts[1:])


def _with_ext(relpath: Path, ext: str) -> Path:
    # Appended, not `with_suffix`: a name with a dot ("st. louis") must not lose its tail and collide.
    return relpath.with_name(relpath.name + ext)


class SampleLock:
    """An flock held on a sample's lock file; closing the descriptor releases it (from any thread)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class MethodStore:
    """The folder of one method variant on one dataset."""

    def __init__(self, root: Path, dataset: str, method_key: str) -> None:
        self.dataset = dataset
        self.method_key = method_key
        self.dir = Path(root) / "store" / dataset / method_key

    def image_path(self, sample_id: str) -> Path:
        return self.dir / _with_ext(sample_relpath(sample_id), ".png")

    def record_path(self, sample_id: str) -> Path:
        return self.dir / _with_ext(sample_relpath(sample_id), ".json")

    def scores_path(self, sample_id: str) -> Path:
        return self.dir / _with_ext(sample_relpath(sample_id), ".scores.json")

    def lock_path(self, sample_id: str) -> Path:
        relpath = sample_relpath(sample_id)
        return self.dir / relpath.parent / f".{relpath.name}.lock"

    def acquire_lock(self, sample_id: str, blocking: bool = True) -> "SampleLock | None":
        """The sample's lock, held until `release()`, or None when `blocking` is False and another process
        holds it. On acquiring, leftovers of a writer that died are removed. The holder may hand it to a
        writer thread, which releases it once the sample's files are written."""
        path = self.lock_path(sample_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        self._remove_stale_temps(sample_id)
        return SampleLock(fd)

    @contextlib.contextmanager
    def sample_lock(self, sample_id: str, blocking: bool = True) -> Iterator[bool]:
        """Hold the sample's lock for the block; yields False (and holds nothing) when `blocking` is
        False and another process holds it."""
        lock = self.acquire_lock(sample_id, blocking)
        try:
            yield lock is not None
        finally:
            if lock is not None:
                lock.release()

    def _remove_stale_temps(self, sample_id: str) -> None:
        # Only writers of this sample create these names, and they all hold its lock: any found now are
        # leftovers of a process that died mid-write.
        for path in (self.image_path(sample_id), self.record_path(sample_id), self.scores_path(sample_id)):
            for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

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
        """The sample's record, or None when it is missing or unreadable (never half a record)."""
        return _read_json_object(self.record_path(sample_id))

    def trusted_record(self, sample_id: str) -> dict[str, Any] | None:
        """The record if it says ok, names this sample, and its PNG exists with the recorded hash; else None."""
        record = self.load_record(sample_id)
        return record if record is not None and self.verified_png(sample_id, record) is not None else None

    def verified_png(self, sample_id: str, record: Mapping[str, Any]) -> bytes | None:
        """The PNG bytes `record` vouches for: only if it says ok, names this sample, and the file exists
        with the recorded hash. A reader that needs the pixels decodes these bytes (`decode_png`) instead
        of reading the file a second time."""
        if record.get("status") != "ok" or record.get("sample_id", sample_id) != sample_id:
            return None
        output = record.get("output")
        try:
            data = self.image_path(sample_id).read_bytes()
        except OSError:
            return None
        return data if isinstance(output, dict) and sha256_bytes(data) == output.get("sha256") else None

    def load_image(self, sample_id: str) -> np.ndarray:
        return decode_png(self.image_path(sample_id).read_bytes())

    def load_scores(self, sample_id: str) -> dict[str, Any]:
        """Cached metric entries by metric id; an unreadable cache is an empty one (scores are recomputed)."""
        scores = _read_json_object(self.scores_path(sample_id)) or {}
        return {k: v for k, v in scores.items() if isinstance(v, dict)}

    def save_scores(self, sample_id: str, scores: Mapping[str, Any]) -> None:
        atomic_write_json(self.scores_path(sample_id), dict(scores))

    def update_scores(self, sample_id: str, entries: Mapping[str, Any]) -> None:
        """Merge `entries` into the cache under the sample's lock, so two processes scoring the same
        sample with different metrics keep each other's values."""
        with self.sample_lock(sample_id):
            self.save_scores(sample_id, {**self.load_scores(sample_id), **entries})

    def load_set_scores(self) -> dict[str, Any]:
        return _read_json_object(self.dir / "_sets" / "scores.json") or {}

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


def _read_json_object(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return None
    return obj if isinstance(obj, dict) else None


def iter_method_stores(root: Path) -> Iterator[MethodStore]:
    """Every method variant folder of a store (all datasets), in a stable order."""
    base = Path(root) / "store"
    if not base.is_dir():
        return
    for dataset_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for method_dir in sorted(p for p in dataset_dir.iterdir() if (p / "method.json").is_file()):
            yield MethodStore(Path(root), dataset_dir.name, method_dir.name)
