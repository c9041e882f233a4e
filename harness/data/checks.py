"""Strict checks for annotation contents; every failure names the file and the field.

Loaders call these right after reading a file, so an annotation that would make a method silently edit
the wrong pixels (a point outside the image, a mask of another size, an odd number of drag points) stops
the sample with a message a person can act on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from harness.data.base import DataError


def check_keys(obj: Any, path: Path, keys: Iterable[str], exact: bool = True) -> Mapping[str, Any]:
    """`obj` is a dict with all of `keys` (and, if `exact`, no others)."""
    keys = tuple(keys)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with keys {list(keys)}, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataError(f"{path}: missing field(s) {missing}")
    extra = sorted(map(str, set(obj) - set(keys)))
    if exact and extra:
        raise DataError(f"{path}: unexpected field(s) {extra}; expected exactly {list(keys)}")
    return obj


def check_str(value: Any, path: Path, field: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{path}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def point_array(value: Any, path: Path, field: str) -> np.ndarray:
    """A list of [x, y] integer pairs (or an integer (N, 2) array) as an int64 (N, 2) array; N ≥ 1."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iu" or value.ndim != 2 or value.shape[1] != 2:
            raise DataError(f"{path}: field {field!r} must be integer [x, y] pairs, got an array "
                            f"{value.dtype} {value.shape}")
        points = value.astype(np.int64)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not (isinstance(item, (list, tuple, np.ndarray)) and len(item) == 2 and all(_is_int(v) for v in item)):
                raise DataError(f"{path}: field {field!r}[{i}] must be an [x, y] pair of integers, got {item!r}")
        points = np.array(value, dtype=np.int64).reshape(-1, 2)
    else:
        raise DataError(f"{path}: field {field!r} must be a list of [x, y] points, got {type(value).__name__}")
    if len(points) == 0:
        raise DataError(f"{path}: field {field!r} is empty")
    return points


def check_inside(points: np.ndarray, path: Path, field: str, size: tuple[int, int]) -> None:
    """Every (x, y) lies on a pixel of an image of `size` = (width, height)."""
    w, h = size
    outside = (points[:, 0] < 0) | (points[:, 0] >= w) | (points[:, 1] < 0) | (points[:, 1] >= h)
    if outside.any():
        i = int(np.argmax(outside))
        raise DataError(f"{path}: field {field!r}[{i}] = {points[i].tolist()} lies outside the {w}x{h} image "
                        f"({int(outside.sum())} point(s) outside)")


def interleaved_pairs(value: Any, path: Path, field: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """DragBench's interleaved list h0, t0, h1, t1, … → (handles, targets), checked against the image."""
    points = point_array(value, path, field)
    if len(points) % 2:
        raise DataError(f"{path}: field {field!r} has an odd number of points ({len(points)}); expected "
                        "interleaved handle/target pairs")
    check_inside(points, path, field, size)
    return points[0::2].astype(np.float64), points[1::2].astype(np.float64)


def check_mask_shape(mask: np.ndarray, path: Path, field: str, size: tuple[int, int], image: Path | str) -> None:
    w, h = size
    if mask.ndim != 2 or mask.shape != (h, w):
        raise DataError(f"{path}: field {field!r} has shape {mask.shape}, but {image} is {w}x{h} "
                        f"(expected ({h}, {w}))")


def binary_mask(mask: Any, path: Path, field: str, size: tuple[int, int], image: Path | str,
                threshold: int | None = None) -> np.ndarray:
    """A uint8 mask as bool, True = editable.

    With `threshold=None` the values must be exactly {0, 1} or {0, 255} (DragBench pickles, Drag100 PNGs);
    with a threshold, values above it are True (the reference binarisation of formats whose masks may be
    anti-aliased). The mask must match the image size and must not be empty.
    """
    if not isinstance(mask, np.ndarray):
        raise DataError(f"{path}: field {field!r} must be a numpy array, got {type(mask).__name__}")
    if mask.dtype != np.uint8:
        raise DataError(f"{path}: field {field!r} must be uint8, got {mask.dtype}")
    check_mask_shape(mask, path, field, size, image)
    if threshold is None:
        values = np.unique(mask)
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            raise DataError(f"{path}: field {field!r} must be binary ({{0, 1}} or {{0, 255}}), "
                            f"found values {values[:8].tolist()}{'…' if len(values) > 8 else ''}")
        out = mask > 0
    else:
        out = mask > threshold
    if not out.any():
        raise DataError(f"{path}: field {field!r} is empty (no editable pixel)")
    return out


def rle_mask(rle: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    """A flat run-length list `[s0, n0, s1, n1, …]` over the row-major (H, W) image → bool mask of `shape`.

    A run that starts inside the image but overruns its end is clipped (as PIE-Bench's official decoder
    does); a list of odd length, non-integers, negative lengths and starts outside the image are errors.
    `where` names the file and field ("<file>: field 'mask'").
    """
    if not isinstance(rle, list):
        raise DataError(f"{where}: must be a list of integers (RLE), got {type(rle).__name__}")
    if len(rle) % 2:
        raise DataError(f"{where}: RLE has an odd length ({len(rle)}); expected start/length pairs")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in rle):
        raise DataError(f"{where}: RLE values must be integers")
    length = shape[0] * shape[1]
    runs = np.asarray(rle, dtype=np.int64).reshape(-1, 2)
    starts, counts = runs[:, 0], runs[:, 1]
    if ((starts < 0) | (starts >= length) | (counts < 0)).any():
        i = int(np.argmax((starts < 0) | (starts >= length) | (counts < 0)))
        raise DataError(f"{where}: RLE run {i} = ({starts[i]}, {counts[i]}) is outside the "
                        f"{shape[1]}x{shape[0]} image or has a negative length")
    ends = np.minimum(starts + counts, length)
    edges = np.zeros(length + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    return (np.cumsum(edges[:-1]) > 0).reshape(shape)
