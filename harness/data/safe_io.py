"""Reading untrusted dataset files: every failure is a `DataError` that names the file (and the field).

Dataset files come from archives and drives that nobody here controls. The readers below turn the ways
they go wrong (a symlink that leaves the dataset root, a FIFO, a zero-byte or truncated image, a
decompression bomb, a palette or 16-bit image, JSON with `NaN` or duplicate keys, a pickle that would run
code) into one exception type with an actionable message, so a loader raises it for the one sample and
the edit stage records that sample as failed while the run goes on. What the decoded contents must
satisfy (point lists, mask values and shapes, RLE) is checked in `harness.data.checks`.

Messages read `<file>: field '<field>': <what is wrong>`, or `<file>: <what is wrong>` for whole-file
formats (JSON, pickle, npy). For images the field is the file's role in the sample ("source image",
"mask.png").

Images are opened in two steps because most validation needs only the header: `image_header` reads size,
mode and (for PNG) bit depth without decoding pixels, which keeps `describe` fast; `read_image` and
`read_mask` decode, which is where truncated and corrupt files show up.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.data.base import DataError

# 8192² pixels. Benchmark images are at most a few megapixels; anything near this is a mistake or an attack
# (a tiny PNG can declare a 100000² canvas that would take 30 GB to decode).
MAX_PIXELS = 8192 * 8192
MAX_JSON_BYTES = 64 * 2 ** 20  # PIE-Bench's mapping file, the largest annotation here, is 5.3 MB


def fail(path: Path | str, field: str | None, problem: str) -> DataError:
    """The error for one field of one file, or for the whole file when `field` is None (callers `raise fail(...)`)."""
    return DataError(f"{path}: field {field!r}: {problem}" if field is not None else f"{path}: {problem}")


# --- paths -------------------------------------------------------------------------------------------

def resolve_inside(root: Path | str, path: Path | str, field: str | None) -> Path:
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


def checked_file(path: Path | str, field: str | None = None, root: Path | str | None = None) -> Path:
    """`path` if it is a non-empty regular file (inside `root` when given). A FIFO or device would block
    or never end when read, so anything but a regular file is refused before it is opened."""
    path = Path(path)
    real = resolve_inside(root, path, field) if root is not None else path
    if not real.exists():
        raise fail(path, field, "file not found")
    if not real.is_file():
        raise fail(path, field, "not a regular file")
    if real.stat().st_size == 0:
        raise fail(path, field, "file is empty (0 bytes)")
    return real


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


def load_pickle(path: Path | str, root: Path | str | None = None) -> Any:
    """Unpickle a dataset annotation through the allow-list; never `pickle.load` dataset files directly."""
    path = Path(path)
    real = checked_file(path, None, root)
    try:
        with open(real, "rb") as f:
            return _AllowListUnpickler(f, path).load()
    except pickle.UnpicklingError as exc:
        message = str(exc)
        raise DataError(message if message.startswith(str(path)) else f"{path}: not a valid pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise DataError(f"{path}: not a valid pickle: {type(exc).__name__}: {exc}") from None


# --- JSON and npy ------------------------------------------------------------------------------------

def read_json(path: Path | str, field: str | None = None, root: Path | str | None = None,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
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
        return json.loads(real.read_bytes().decode("utf-8"), parse_constant=refuse_constant,
                          object_pairs_hook=unique_keys)
    except UnicodeDecodeError as exc:
        raise fail(path, field, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise fail(path, field, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise fail(path, field, "JSON is nested too deeply") from None


def read_npy(path: Path | str, root: Path | str | None = None) -> np.ndarray:
    """`numpy.load` with `allow_pickle=False`: object arrays are refused, not unpickled."""
    real = checked_file(path, None, root)
    try:
        return np.load(real, allow_pickle=False)
    except ValueError as exc:  # object arrays ("Object arrays cannot be loaded when allow_pickle=False"), bad headers
        raise fail(path, None, f"cannot read as a plain .npy array: {exc}") from None
    except (OSError, EOFError) as exc:
        raise fail(path, None, f"cannot read .npy file: {exc}") from None


# --- images ------------------------------------------------------------------------------------------

IMAGE_MODES = ("RGB", "L")  # L (8-bit grey) converts to RGB losslessly; anything else would lose meaning
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


def image_header(path: Path | str, field: str, modes: Iterable[str] = IMAGE_MODES, root: Path | str | None = None,
                 max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """Size and mode from the file header (no pixel decoding); refuses oversized canvases, unexpected modes
    and bit depths."""
    return _header(Path(path), checked_file(path, field, root), field, tuple(modes), max_pixels)


def _header(path: Path, real: Path, field: str, modes: tuple[str, ...], max_pixels: int) -> ImageHeader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(real) as im:
                header = ImageHeader(path, str(im.format), im.mode, (int(im.size[0]), int(im.size[1])))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise fail(path, field, f"image is too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise fail(path, field, f"not a readable image: {exc}") from None
    w, h = header.size
    if w * h > max_pixels:
        raise fail(path, field, f"image is {w}×{h} pixels, over the limit of {max_pixels} (a decompression "
                                "bomb or not a benchmark image)")
    if header.mode not in modes:
        hint = _MODE_HINTS.get(header.mode)
        what = f"{hint} (mode {header.mode})" if hint else f"mode {header.mode}"
        raise fail(path, field, f"{what}; expected mode {' or '.join(modes)}")
    if header.format == "PNG" and (depth := _png_bit_depth(real)) not in (None, 1, 8):
        raise fail(path, field, f"a {depth}-bit PNG; expected 8 bits per channel")
    if w < 1 or h < 1:
        raise fail(path, field, f"empty image size {header.size}")
    return header


def _decode(path: Path | str, field: str, modes: Iterable[str], root: Path | str | None,
            max_pixels: int) -> Image.Image:
    """The image after the header checks, fully decoded: truncated and corrupt files fail here."""
    real = checked_file(path, field, root)
    header = _header(Path(path), real, field, tuple(modes), max_pixels)
    try:
        if header.format == "PNG":
            with Image.open(real) as probe:
                probe.verify()  # chunk CRCs: catches corrupt files that would still decode
        im = Image.open(real)
        im.load()  # truncated or corrupt data fails here, not at open
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise fail(path, field, f"cannot be decoded (truncated or corrupt file?): {exc}") from None
    return im


def read_image(path: Path | str, field: str, modes: Iterable[str] = IMAGE_MODES, root: Path | str | None = None,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image to uint8 H×W×3 RGB after the checks of `image_header`."""
    with _decode(path, field, modes, root, max_pixels) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_mask(path: Path | str, field: str, modes: Iterable[str] = MASK_MODES, root: Path | str | None = None,
              max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a single-channel mask image to a uint8 H×W array (mode "1" reads as {0, 255}); what the values
    must be is the loader's call (`harness.data.checks.binary_mask`)."""
    with _decode(path, field, modes, root, max_pixels) as im:
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
            raise fail(path, None, "file not found") from None
    digest.update(extra)
    return digest.hexdigest()[:16]
