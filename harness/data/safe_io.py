"""Reading untrusted dataset files: every failure is a `DataError` that names the file and the field.

Dataset files come from archives and drives that nobody here controls. These helpers turn the ways they go
wrong (a symlink that leaves the dataset root, a zero-byte or truncated image, a decompression bomb, a
mask of the wrong size, NaN or out-of-image points, JSON with `NaN` or duplicate keys, RLE runs outside
the image) into one exception type with an actionable message, so a loader raises it for the one sample
and the edit stage records that sample as failed while the run goes on.

Messages read `<file>: field '<field>': <what is wrong>`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.data.base import DataError

# 8192² pixels. Benchmark images are at most a few megapixels; anything near this is a mistake or an attack
# (a tiny PNG can declare a 100000² canvas that would take 30 GB to decode). Loaders may pass their own.
MAX_PIXELS = 8192 * 8192
MAX_JSON_BYTES = 64 * 2 ** 20  # PIE-Bench's mapping file, the largest annotation here, is 5.3 MB
# Modes that `convert("RGB")` maps without losing meaning; 16-bit and float images would be clipped silently.
IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "YCbCr")
MASK_MODES = ("1", "L", "P", "RGB", "RGBA")


def fail(path: Path | str, field: str, problem: str) -> DataError:
    """The error for one field of one file (callers `raise fail(...)`)."""
    return DataError(f"{path}: field {field!r}: {problem}")


def resolve_inside(root: Path | str, path: Path | str, field: str) -> Path:
    """`path` (absolute, or relative to `root`) with symlinks resolved; refuses anything outside `root`.

    A dataset that links or `..`-walks to files outside its root could make the harness read (and copy
    into reports) arbitrary files of the machine, so that is an error, not a feature.
    """
    root_real = Path(root).resolve()
    candidate = Path(path) if Path(path).is_absolute() else Path(root) / path
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise fail(candidate, field, f"cannot resolve the path ({exc})") from None
    if not real.is_relative_to(root_real):
        raise fail(candidate, field, f"resolves to {real}, outside the dataset root {root_real}")
    return real


def checked_file(path: Path | str, field: str, root: Path | str | None = None) -> Path:
    """`path` if it is a non-empty regular file (inside `root` when given). A FIFO or device would block
    or never end when read, so anything but a regular file is refused before it is opened."""
    path = Path(path)
    real = resolve_inside(root, path, field) if root is not None else path
    if not real.exists():
        raise fail(path, field, "file is missing")
    if not real.is_file():
        raise fail(path, field, "not a regular file")
    if real.stat().st_size == 0:
        raise fail(path, field, "file is empty (0 bytes)")
    return real


def _open_image(path: Path, field: str, max_pixels: int) -> Image.Image:
    """Decode `path` fully, refusing oversized canvases before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:  # reads the header only
                w, h = probe.size
                if w * h > max_pixels:
                    raise fail(path, field, f"image is {w}×{h} = {w * h} pixels, over the limit of {max_pixels}")
                if probe.format == "PNG":
                    probe.verify()  # chunk CRCs: catches corrupt files that still decode
            image = Image.open(path)
            image.load()
            return image
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise fail(path, field, f"image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise fail(path, field, "not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise fail(path, field, f"truncated or corrupt image ({type(exc).__name__}: {exc})") from None


def read_image(path: Path | str, field: str, root: Path | str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as uint8 H×W×3 RGB."""
    real = checked_file(path, field, root)
    with _open_image(real, field, max_pixels) as image:
        if image.mode not in IMAGE_MODES:
            raise fail(path, field, f"image mode {image.mode!r} is not supported (expected one of {IMAGE_MODES})")
        return np.asarray(image.convert("RGB"))


def read_mask(path: Path | str, field: str, shape: tuple[int, int], root: Path | str | None = None,
              threshold: int = 0, allow_empty: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask image as bool (H, W): pixels above `threshold` are True. Its size must be `shape` (H, W)."""
    real = checked_file(path, field, root)
    with _open_image(real, field, max_pixels) as image:
        if image.mode not in MASK_MODES:
            raise fail(path, field, f"mask mode {image.mode!r} is not supported (expected one of {MASK_MODES})")
        values = np.asarray(image.convert("L") if image.mode in ("1", "P") else image)
    if values.ndim == 3:
        if not (values[..., :3] == values[..., :1]).all():
            raise fail(path, field, "colour mask: expected a grayscale image (equal R, G, B)")
        values = values[..., 0]
    return check_mask(values > threshold, field, path, shape, allow_empty)


def check_mask(mask: Any, field: str, source: Path | str, shape: tuple[int, int], allow_empty: bool = False) -> np.ndarray:
    """A mask array (from an image, a pickle or an RLE) checked for shape (H, W) and, unless allowed, emptiness."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or tuple(mask.shape) != tuple(shape):
        got = "×".join(map(str, mask.shape[::-1])) if mask.ndim == 2 else f"shape {mask.shape}"
        raise fail(source, field, f"mask is {got}, the image is {shape[1]}×{shape[0]} (W×H)")
    mask = mask.astype(bool)
    if not allow_empty and not mask.any():
        raise fail(source, field, "mask is empty")
    return mask


def read_json(path: Path | str, field: str, root: Path | str | None = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file, refusing `NaN`/`Infinity` (not JSON, but Python's parser accepts them) and duplicate keys
    (which make the file mean different things to different readers)."""
    real = checked_file(path, field, root)
    size = real.stat().st_size
    if size > max_bytes:
        raise fail(path, field, f"JSON file is {size} bytes, over the limit of {max_bytes}")

    def refuse_constant(name: str) -> Any:
        raise fail(path, field, f"{name} is not valid JSON")

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise fail(path, field, f"duplicate keys {duplicates}")
        return dict(pairs)

    try:
        return json.loads(real.read_bytes().decode("utf-8"), parse_constant=refuse_constant, object_pairs_hook=unique_keys)
    except UnicodeDecodeError as exc:
        raise fail(path, field, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise fail(path, field, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise fail(path, field, "JSON is nested too deeply") from None


def check_points(points: Any, field: str, source: Path | str, size: tuple[int, int]) -> np.ndarray:
    """(x, y) pixel points as float (N, 2), each finite and inside a `size` = (W, H) image."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(source, field, "points must be numbers") from None
    if array.ndim != 2 or array.shape[1] != 2:
        raise fail(source, field, f"expected a list of [x, y] pairs, got shape {array.shape}")
    w, h = size
    for i, (x, y) in enumerate(array):
        if not (np.isfinite(x) and np.isfinite(y)):
            raise fail(source, field, f"point {i} ({x}, {y}) is not finite")
        if not (0 <= x < w and 0 <= y < h):
            raise fail(source, field, f"point {i} ({x:g}, {y:g}) is outside the {w}×{h} image")
    return array


def decode_rle(runs: Sequence[Any], field: str, source: Path | str, shape: tuple[int, int]) -> np.ndarray:
    """A flat `[start0, length0, start1, length1, …]` run-length mask over the row-major (H, W) image.

    A run that starts inside the image but overruns its end is clipped, as PIE-Bench's official decoder
    does; a run that starts outside the image, a negative value or an odd-length list is an error.
    """
    h, w = shape
    total = h * w
    if not isinstance(runs, (list, tuple)) or len(runs) % 2:
        raise fail(source, field, f"RLE must be a flat list of (start, length) pairs, got "
                                  f"{type(runs).__name__} of length {len(runs) if hasattr(runs, '__len__') else '?'}")
    mask = np.zeros(total, dtype=bool)
    for i in range(0, len(runs), 2):
        start, length = runs[i], runs[i + 1]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, length)):
            raise fail(source, field, f"RLE run {i // 2} ({start!r}, {length!r}) must be two integers")
        if start < 0 or length < 0:
            raise fail(source, field, f"RLE run {i // 2} ({start}, {length}) has a negative value")
        if start >= total:
            raise fail(source, field, f"RLE run {i // 2} starts at pixel {start}, past the end of the "
                                      f"{w}×{h} image ({total} pixels)")
        mask[start:start + min(length, total - start)] = True
    return mask.reshape(h, w)
