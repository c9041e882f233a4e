"""A corpus of broken and hostile datasets, one `Case` per way a dataset can go wrong.

Each case names the loader it targets (`format`, a name in `DATASETS`), how to corrupt one sample of a
valid fixture written by `write_fixture(format, root)`, and what the error must say (the file and the
field). `test_hostile_inputs.py` runs every case through the whole harness; cases whose loader is not
registered on this branch are skipped, so the same corpus exercises every loader once it exists.

Every fixture holds two samples, `good` and `bad` (category `c` where the format has categories); cases
corrupt `bad`. `level="sample"` cases must fail that one sample and let the run finish; `level="dataset"`
cases (a broken file shared by all samples) must stop the run before any work with a clear error.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

H, W = 43, 64  # an odd height, like DragBench's 512×341


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _mask(shape: tuple[int, int] = (H, W)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[10:30, 10:40] = 1
    return m


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares a `width`×`height` canvas but holds almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def outside_dir(paths: dict[str, Path]) -> Path:
    """A folder beside the dataset root: the target of links that try to leave it."""
    outside = paths["root"].parent / "outside"
    outside.mkdir(exist_ok=True)
    return outside


def link_outside(paths: dict[str, Path], path: Path) -> None:
    """Replace `path` by a symlink to a copy of it outside the dataset root."""
    outside = outside_dir(paths) / path.name
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)


class _MkdirOnLoad:
    """A pickle payload that creates a marker directory when unpickled: proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


PICKLE_MARKER = "PICKLE_CODE_RAN"


# ---------------------------------------------------------------------------------------- writers


def _write_test_folder(root: Path) -> dict[str, Path]:
    dirs = {}
    for i, name in enumerate(("good", "bad")):
        d = root / "c" / name
        d.mkdir(parents=True)
        Image.fromarray(_image(i)).save(d / "image.png")
        Image.fromarray(_mask() * 255).save(d / "mask.png")
        (d / "sample.json").write_text(json.dumps({"prompt": "a photo", "handles": [[20, 15]], "targets": [[30, 20]]}))
        dirs[name] = d
    return dirs


def _write_dragbench_d(root: Path) -> dict[str, Path]:
    dirs = {}
    for i, name in enumerate(("good", "bad")):
        d = root / "c" / name
        d.mkdir(parents=True)
        Image.fromarray(_image(i)).save(d / "original_image.png")
        Image.fromarray(_image(i + 10)).save(d / "user_drag.png")
        meta = {"prompt": "a photo", "points": [[20, 15], [30, 20]], "mask": _mask()}
        (d / "meta_data.pkl").write_bytes(pickle.dumps(meta, protocol=4))
        dirs[name] = d
    return dirs


def _write_drag100(root: Path) -> dict[str, Path]:
    dirs = {}
    for i, name in enumerate(("good", "bad")):
        d = root / name
        d.mkdir(parents=True)
        Image.fromarray(_image(i)).save(d / "original.jpg", quality=95)
        Image.fromarray(_mask() * 255).save(d / "mask.png")
        (d / "points.json").write_text(json.dumps({"points": [[20, 15], [30, 20]]}))
        Image.fromarray(_image(i + 10)).save(d / "image_with_points.jpg")
        dirs[name] = d
    return dirs


def _rle(mask: np.ndarray) -> list[int]:
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def _write_pie_bench(root: Path) -> dict[str, Path]:
    folder = root / "annotation_images" / "0_random_140"
    folder.mkdir(parents=True)
    mapping = {}
    for i, key in enumerate(("000000000000", "000000000001")):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(folder / f"{key}.jpg")
        mask = np.zeros((512, 512), bool)
        mask[100:200, 150:300] = True
        mapping[key] = {"image_path": f"0_random_140/{key}.jpg", "original_prompt": "a [cat] on a mat",
                        "editing_prompt": "a [dog] on a mat", "editing_instruction": "make it a dog",
                        "editing_type_id": "0", "blended_word": "cat dog", "mask": _rle(mask)}
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    return {"good": folder / "000000000000.jpg", "bad": folder / "000000000001.jpg", "mapping": root / "mapping_file.json"}


WRITERS: dict[str, Callable[[Path], dict[str, Path]]] = {
    "test_folder": _write_test_folder,
    "dragbench_d": _write_dragbench_d,
    "drag100": _write_drag100,
    "pie_bench": _write_pie_bench,
}


def write_fixture(fmt: str, root: Path) -> dict[str, Path]:
    """A valid two-sample dataset of format `fmt` under `root`; returns the paths cases corrupt (and `root`)."""
    return {"root": root, **WRITERS[fmt](root)}


# ------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    format: str
    name: str
    corrupt: Callable[[dict[str, Path]], None]  # gets write_fixture's paths
    expect: tuple[str, ...]  # substrings of the error message (file and field)
    level: str = "sample"


def _edit_json(path: Path, change: Callable[[dict], None], raw: Callable[[str], str] = lambda s: s) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(raw(json.dumps(obj)))


def _set(key: str, value) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        obj[key] = value
    return change


def _pickle_meta(d: Path, change: Callable[[dict], None]) -> None:
    meta = pickle.loads((d / "meta_data.pkl").read_bytes())  # our own fixture, written above
    change(meta)
    (d / "meta_data.pkl").write_bytes(pickle.dumps(meta, protocol=4))


def _evil_pickle(paths: dict[str, Path]) -> None:
    d = paths["bad"]
    marker = outside_dir(paths) / PICKLE_MARKER
    (d / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": _MkdirOnLoad(marker), "points": [], "mask": None}, protocol=4))


def _replace_dir_with_outside_link(paths: dict[str, Path]) -> None:
    d = paths["bad"]
    outside = outside_dir(paths) / d.name
    d.rename(outside)
    d.symlink_to(outside, target_is_directory=True)


def _symlink_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.with_name("loop.png"))
    path.with_name("loop.png").symlink_to(path)


def _fifo(path: Path) -> None:
    """A named pipe: opening it for reading would block the run forever."""
    path.unlink()
    os.mkfifo(path)


def _pie_mapping(change: Callable[[dict], None]) -> Callable[[dict[str, Path]], None]:
    return lambda p: _edit_json(p["mapping"], lambda m: change(m["000000000001"]))


CASES: tuple[Case, ...] = (
    # -- the test-only folder format (always registered in the tests) ---------------------------------
    Case("test_folder", "truncated_png", lambda p: truncate(p["bad"] / "image.png"), ("image.png", "'image'", "truncated")),
    Case("test_folder", "zero_byte_image", lambda p: empty(p["bad"] / "image.png"), ("image.png", "'image'", "empty")),
    Case("test_folder", "zero_byte_json", lambda p: empty(p["bad"] / "sample.json"), ("sample.json", "empty")),
    Case("test_folder", "missing_mask", lambda p: (p["bad"] / "mask.png").unlink(), ("mask.png", "'mask'", "file not found")),
    Case("test_folder", "not_an_image", lambda p: (p["bad"] / "image.png").write_text("hello"), ("image.png", "'image'", "not a readable image")),
    Case("test_folder", "wrong_mask_shape",
         lambda p: Image.fromarray(np.full((H + 1, W), 255, np.uint8)).save(p["bad"] / "mask.png"),
         ("mask.png", "'mask'", f"image.png is {W}x{H}")),
    Case("test_folder", "colour_mask",
         lambda p: Image.fromarray(_image(5)).save(p["bad"] / "mask.png"), ("mask.png", "'mask'", "mode RGB; expected mode L or 1")),
    Case("test_folder", "nan_literal_point",
         lambda p: _edit_json(p["bad"] / "sample.json", _set("handles", [[1.5, 2.5]]), lambda s: s.replace("1.5", "NaN")),
         ("sample.json", "NaN is not valid JSON")),
    Case("test_folder", "nan_string_point", lambda p: _edit_json(p["bad"] / "sample.json", _set("handles", [["nan", 3]])),
         ("sample.json", "'handles'", "pair of integers")),
    Case("test_folder", "inf_point",
         lambda p: _edit_json(p["bad"] / "sample.json", _set("targets", [[7.5, 3]]), lambda s: s.replace("7.5", "1e999")),
         ("sample.json", "'targets'", "pair of integers")),
    Case("test_folder", "negative_point", lambda p: _edit_json(p["bad"] / "sample.json", _set("handles", [[-1, 3]])),
         ("sample.json", "'handles'", "outside the 64x43 image")),
    Case("test_folder", "point_past_edge", lambda p: _edit_json(p["bad"] / "sample.json", _set("targets", [[10, H]])),
         ("sample.json", "'targets'", "outside")),
    Case("test_folder", "ragged_points", lambda p: _edit_json(p["bad"] / "sample.json", _set("handles", [[1, 2, 3]])),
         ("sample.json", "'handles'", "[x, y] pair")),
    Case("test_folder", "invalid_json", lambda p: (p["bad"] / "sample.json").write_text('{"prompt": "a", "handles": [[1, 2]'),
         ("sample.json", "invalid JSON", "line 1")),
    Case("test_folder", "duplicate_json_keys",
         lambda p: (p["bad"] / "sample.json").write_text('{"prompt": "a", "handles": [[1, 2]], "handles": [[3, 4]], "targets": [[5, 6]]}'),
         ("sample.json", "duplicate keys", "handles")),
    Case("test_folder", "not_utf8_json", lambda p: (p["bad"] / "sample.json").write_bytes(b'{"prompt": "\xff\xfe"}'),
         ("sample.json", "not UTF-8")),
    Case("test_folder", "huge_image_header", lambda p: png_header_only(p["bad"] / "image.png", 100_000, 100_000),
         ("image.png", "'image'", "too large")),
    Case("test_folder", "image_over_limit", lambda p: png_header_only(p["bad"] / "image.png", 9000, 8000),
         ("image.png", "'image'", "over the limit")),
    Case("test_folder", "sixteen_bit_image",
         lambda p: Image.fromarray(np.zeros((H, W), np.uint16)).save(p["bad"] / "image.png"), ("image.png", "mode")),
    Case("test_folder", "symlink_file_outside", lambda p: link_outside(p, p["bad"] / "image.png"),
         ("image.png", "'image'", "outside the dataset root")),
    Case("test_folder", "symlink_dir_outside", _replace_dir_with_outside_link,
         ("sample.json", "outside the dataset root")),
    Case("test_folder", "symlink_loop", lambda p: _symlink_loop(p["bad"] / "image.png"), ("image.png", "'image'", "cannot resolve")),
    Case("test_folder", "fifo_image", lambda p: _fifo(p["bad"] / "mask.png"), ("mask.png", "'mask'", "not a regular file")),
    Case("test_folder", "deeply_nested_json", lambda p: (p["bad"] / "sample.json").write_text("[" * 100_000 + "]" * 100_000),
         ("sample.json", "nested too deeply")),
    Case("test_folder", "rle_past_image",
         lambda p: _edit_json(p["bad"] / "sample.json", _set("mask_rle", [10, 5, H * W + 3, 4])),
         ("sample.json", "'mask_rle'", "outside the 64x43 image")),
    Case("test_folder", "rle_negative", lambda p: _edit_json(p["bad"] / "sample.json", _set("mask_rle", [10, -5])),
         ("sample.json", "'mask_rle'", "negative")),
    Case("test_folder", "rle_odd_length", lambda p: _edit_json(p["bad"] / "sample.json", _set("mask_rle", [10, 5, 20])),
         ("sample.json", "'mask_rle'", "pairs")),
    # -- DragBench-D (datasets.md §2, §9) --------------------------------------------------------------
    Case("dragbench_d", "truncated_png", lambda p: truncate(p["bad"] / "original_image.png"), ("original_image.png",)),
    Case("dragbench_d", "zero_byte_pickle", lambda p: empty(p["bad"] / "meta_data.pkl"), ("meta_data.pkl",)),
    Case("dragbench_d", "malicious_pickle", _evil_pickle, ("meta_data.pkl",)),
    Case("dragbench_d", "wrong_mask_shape", lambda p: _pickle_meta(p["bad"], _set("mask", _mask((H - 1, W)))),
         ("meta_data.pkl", "mask")),
    Case("dragbench_d", "negative_point", lambda p: _pickle_meta(p["bad"], _set("points", [[-3, 4], [10, 10]])),
         ("meta_data.pkl", "points")),
    Case("dragbench_d", "odd_points", lambda p: _pickle_meta(p["bad"], _set("points", [[3, 4], [10, 10], [5, 5]])),
         ("meta_data.pkl", "points")),
    Case("dragbench_d", "huge_image", lambda p: png_header_only(p["bad"] / "original_image.png", 100_000, 100_000),
         ("original_image.png",)),
    Case("dragbench_d", "symlink_outside", lambda p: link_outside(p, p["bad"] / "original_image.png"), ("original_image.png",)),
    # -- Drag100 (datasets.md §3) -----------------------------------------------------------------------
    Case("drag100", "invalid_json", lambda p: (p["bad"] / "points.json").write_text("{points: [[1, 2]]"), ("points.json",)),
    Case("drag100", "nan_point",
         lambda p: _edit_json(p["bad"] / "points.json", _set("points", [[1.5, 2], [3, 4]]), lambda s: s.replace("1.5", "NaN")),
         ("points.json",)),
    Case("drag100", "zero_byte_mask", lambda p: empty(p["bad"] / "mask.png"), ("mask.png",)),
    Case("drag100", "wrong_mask_shape", lambda p: Image.fromarray(np.full((H, W + 3), 255, np.uint8)).save(p["bad"] / "mask.png"),
         ("mask.png",)),
    Case("drag100", "truncated_jpeg", lambda p: truncate(p["bad"] / "original.jpg"), ("original.jpg",)),
    Case("drag100", "symlink_outside", lambda p: link_outside(p, p["bad"] / "mask.png"), ("mask.png",)),
    # -- PIE-Bench (datasets.md §6) ---------------------------------------------------------------------
    Case("pie_bench", "rle_past_image", _pie_mapping(_set("mask", [0, 10, 512 * 512 + 7, 3])), ("mapping_file.json", "mask")),
    Case("pie_bench", "truncated_image", lambda p: truncate(p["bad"]), ("000000000001.jpg",)),
    Case("pie_bench", "invalid_mapping_json", lambda p: p["mapping"].write_text('{"000000000000": {'),
         ("mapping_file.json",), level="dataset"),
)
