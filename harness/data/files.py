"""Reading dataset files safely: allow-listed pickles, JSON, `.npy` without pickles, images with mode checks.

Every reader raises `DataError` naming the file (and the field, where there is one), so a broken sample in
a 3,500-sample benchmark is found by name instead of by a traceback deep inside PIL or pickle.

Images are opened in two steps because most validation needs only the header: `image_header` reads size,
mode and (for PNG) bit depth without decoding pixels, which keeps `describe` fast; `read_image` and
`read_mask` decode, which is where truncated files show up.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.data.base import DataError
from harness.data.safe_io import MAX_PIXELS as MAX_IMAGE_PIXELS


# --- pickles -----------------------------------------------------------------------------------------

def _numpy_reconstruct() -> Any:
    # numpy ≥ 2 moved the module to numpy._core; both spellings in a file resolve to this one function.
    # The lookup is by attribute of an already-imported numpy: nothing named in the file is ever imported.
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_reconstruct()
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,   # written by numpy 1.x (official files)
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,  # written by numpy ≥ 2.0
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only the four numpy globals of datasets.md §9; anything else is refused unresolved."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self._path}: refusing to unpickle global {module}.{name} (only numpy array reconstruction "
                "is allowed in dataset annotations)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"{self._path}: refusing a persistent id in a dataset annotation")


def load_pickle(path: Path) -> Any:
    """Unpickle a dataset annotation through the allow-list; never `pickle.load` dataset files directly."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _AllowListUnpickler(f, path).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except pickle.UnpicklingError as exc:
        message = str(exc)
        raise DataError(message if message.startswith(str(path)) else f"{path}: not a valid pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise DataError(f"{path}: not a valid pickle: {type(exc).__name__}: {exc}") from None


# --- JSON and npy ------------------------------------------------------------------------------------

def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def read_npy(path: Path) -> np.ndarray:
    """`numpy.load` with `allow_pickle=False`: object arrays are refused, not unpickled."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except ValueError as exc:  # object arrays ("Object arrays cannot be loaded when allow_pickle=False"), bad headers
        raise DataError(f"{path}: cannot read as a plain .npy array: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read .npy file: {exc}") from None


# --- images ------------------------------------------------------------------------------------------

IMAGE_MODES = ("RGB", "L")  # L (8-bit grey) converts to RGB losslessly
MASK_MODES = ("L", "1")

_MODE_HINTS = {
    "P": "a palette image",
    "PA": "a palette image with alpha",
    "RGBA": "an image with an alpha channel",
    "LA": "a grey image with an alpha channel",
    "I;16": "a 16-bit image",
    "I;16B": "a 16-bit image",
    "I;16L": "a 16-bit image",
    "I": "a 32-bit integer image",
    "F": "a floating-point image",
    "CMYK": "a CMYK image",
    "YCbCr": "a YCbCr image",
    "1": "a 1-bit image",
}


@dataclass(frozen=True)
class ImageHeader:
    path: Path
    format: str
    mode: str
    size: tuple[int, int]  # (width, height)


def _png_bit_depth(path: Path) -> int | None:
    # PIL opens 16-bit-per-channel RGB PNGs as mode "RGB" and silently drops the low byte; the IHDR chunk
    # (bytes 16–24: width, height, bit depth) tells the truth.
    with open(path, "rb") as f:
        head = f.read(25)
    if len(head) == 25 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def image_header(path: Path, field: str, modes: Iterable[str] = IMAGE_MODES) -> ImageHeader:
    """Size and mode from the file header (no pixel decoding); refuses unexpected modes and bit depths."""
    path = Path(path)
    modes = tuple(modes)
    try:
        with Image.open(path) as im:
            header = ImageHeader(path, str(im.format), im.mode, (int(im.size[0]), int(im.size[1])))
    except FileNotFoundError:
        raise DataError(f"{path}: {field} file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: {field} is not a readable image: {exc}") from None
    if header.size[0] * header.size[1] > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: {field} is {header.size[0]}×{header.size[1]} pixels, over the limit of "
                        f"{MAX_IMAGE_PIXELS} (a decompression bomb or not a benchmark image)")
    if header.mode not in modes:
        what = _MODE_HINTS.get(header.mode, f"mode {header.mode}")
        raise DataError(f"{path}: {field} is {what} (mode {header.mode}); expected mode "
                        f"{' or '.join(modes)}")
    if header.format == "PNG" and (depth := _png_bit_depth(path)) not in (None, 1, 8):
        raise DataError(f"{path}: {field} is a {depth}-bit PNG; expected 8 bits per channel")
    if header.size[0] < 1 or header.size[1] < 1:
        raise DataError(f"{path}: {field} has an empty size {header.size}")
    return header


def _decode(path: Path, field: str, modes: Iterable[str]) -> tuple[ImageHeader, Image.Image]:
    header = image_header(path, field, modes)
    try:
        im = Image.open(path)
        im.load()  # truncated or corrupt data fails here, not at open
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: {field} cannot be decoded (truncated or corrupt file?): {exc}") from None
    return header, im


def read_image(path: Path, field: str, modes: Iterable[str] = IMAGE_MODES) -> np.ndarray:
    """Decode an image to uint8 H×W×3 RGB after the header checks of `image_header`."""
    _, im = _decode(path, field, modes)
    with im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_mask(path: Path, field: str, modes: Iterable[str] = MASK_MODES) -> np.ndarray:
    """Decode a single-channel mask image to a uint8 H×W array (mode "1" reads as {0, 255})."""
    _, im = _decode(path, field, modes)
    with im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


# --- fingerprints ------------------------------------------------------------------------------------

def files_fingerprint(paths: Iterable[Path], extra: bytes = b"") -> str:
    """SHA-256 over the named files' bytes (and `extra`), truncated to 16 hex digits, for run.json."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
    digest.update(extra)
    return digest.hexdigest()[:16]
