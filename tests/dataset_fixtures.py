"""Writers of small dataset trees in the documented on-disk formats (datasets.md §10).

Tests build the formats that are not available on the project's machines from these, and malformed
variants of every format, so loaders are checked against the format description rather than a copy of
real data.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image


def gradient_image(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.stack([xs * 255 // max(w - 1, 1), ys * 255 // max(h - 1, 1), (xs + ys) % 256], axis=-1)
    return np.clip(img + rng.integers(0, 8, img.shape), 0, 255).astype(np.uint8)


def box_mask(w: int, h: int, box: tuple[int, int, int, int], value: int = 1) -> np.ndarray:
    """uint8 (h, w) mask with `value` inside `box` = (x0, y0, x1, y1), end-exclusive."""
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = value
    return m


def write_pickle(path: Path, obj: Any, protocol: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def write_image(path: Path, array: np.ndarray, **save: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def interleave(handles: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> list[list[int]]:
    return [list(map(int, p)) for pair in zip(handles, targets) for p in pair]


# --- DragBench-D / -DR / -SR ------------------------------------------------------------------------

def dragbench_meta(size: tuple[int, int] = (64, 43), prompt: str = "a photo of a cat",
                   points: list | None = None, mask: np.ndarray | None = None) -> dict[str, Any]:
    w, h = size
    return {
        "prompt": prompt,
        "points": points if points is not None else [[10, 12], [20, 14], [30, 30], [40, 28]],
        "mask": mask if mask is not None else box_mask(w, h, (4, 4, 48, 40)),
    }


def write_dragbench_sample(folder: Path, size: tuple[int, int] = (64, 43), meta: dict[str, Any] | None = None,
                           region: dict[str, Any] | None = None, seed: int = 0) -> Path:
    w, h = size
    write_image(folder / "original_image.png", gradient_image(w, h, seed))
    write_image(folder / "user_drag.png", gradient_image(w, h, seed + 100))
    write_pickle(folder / "meta_data.pkl", meta if meta is not None else dragbench_meta(size))
    if region is not None:
        write_pickle(folder / "meta_data_region.pkl", region)
    return folder


def region_meta(size: tuple[int, int], prompt: str = "a photo of a cat") -> dict[str, Any]:
    """A RegionDrag-style region file: a 2×2 latent block moved by one latent pixel right, ×8 pixels."""
    w, h = size
    src = [[8 * x, 8 * y] for y in (1, 2) for x in (1, 2)]
    trg = [[px + 8, py] for px, py in src]
    return {"prompt": prompt, "points": interleave(src, trg), "mask": box_mask(w, h, (0, 0, w, h))}


def write_dragbench_tree(root: Path, region: bool = False, nested: bool = True) -> Path:
    """2 categories × (1, 2) samples (or 3 flat samples), odd heights, plus noise files to be ignored."""
    layout = [("animals", "JH_2023-09-14-1825-41"), ("art_work", "PJC_2023-09-15-1052-01"),
              ("art_work", "PJC_2023-09-15-1549-43")]
    sizes = [(64, 43), (64, 64), (72, 48)]
    for i, ((category, name), size) in enumerate(zip(layout, sizes)):
        folder = root / category / name if nested else root / ["art_0", "sunset", "lion_12"][i]
        write_dragbench_sample(folder, size, dragbench_meta(size, prompt=f"prompt {i} "),
                               region_meta(size, prompt=f"prompt {i} ") if region else None, seed=i)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    first = root / "animals" / layout[0][1] if nested else root / "art_0"
    (first / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (first / "print_pkl.py").write_text("raise SystemExit('a stray script must never run')\n")
    (root / "notes").mkdir()  # a folder without an annotation is not a sample
    (root / "notes" / "readme.txt").write_text("not a sample")
    if nested:
        (root / "animals" / ".DS_Store").write_bytes(b"\x00")
    return root


# --- DragBench-S ------------------------------------------------------------------------------------

def write_dragbench_s_sample(folder: Path, size: tuple[int, int] = (64, 48), source: list | None = None,
                             target: list | None = None, prompt: str = "a lion", mask_value: int = 255) -> Path:
    w, h = size
    write_image(folder / "origin_image.png", gradient_image(w, h))
    write_image(folder / "mask.png", box_mask(w, h, (8, 8, 40, 40), mask_value))
    write_json(folder / "prompt.json", {"prompt": prompt, "source": source or [[10, 10], [20, 30]],
                                        "target": target or [[16, 12], [30, 30]]})
    return folder


# --- Drag100 ----------------------------------------------------------------------------------------

def write_drag100_sample(folder: Path, size: tuple[int, int] = (64, 80), points: list | None = None) -> Path:
    w, h = size
    write_image(folder / "original.jpg", gradient_image(w, h), quality=95)
    write_image(folder / "image_with_points.jpg", gradient_image(w, h, 1), quality=95)
    write_image(folder / "mask.png", box_mask(w, h, (8, 8, 48, 56), 255))
    write_json(folder / "points.json", {"points": points or [[12, 12], [20, 16], [30, 40], [36, 44]]})
    return folder


# --- VFD-Bench (FlowDrag) ---------------------------------------------------------------------------

def write_vfd_sample(folder: Path, size: tuple[int, int] = (64, 48), truth: bool = True,
                     points: list | None = None) -> Path:
    """One VFD-Bench sample (protocols_2025.md §6.5): input/gt RGB PNGs, an L {0, 255} mask, the user's
    and FlowDrag's interleaved points, the caption, and the ignored extras (overlap.png, a JPEG)."""
    w, h = size
    write_image(folder / "input.png", gradient_image(w, h))
    if truth:
        write_image(folder / "gt.png", gradient_image(w, h, 3))
    write_image(folder / "overlap.png", gradient_image(w, h, 4))
    write_image(folder / "vis_points.jpg", gradient_image(w, h, 5), quality=90)
    write_image(folder / "mask.png", box_mask(w, h, (8, 8, 40, 40), 255))
    user = points or [[12, 12], [20, 16]]
    write_json(folder / "points.json", {"points": user})
    write_json(folder / "points_flowdrag.json", {"points": user + [[30, 30], [34, 33], [10, 20], [14, 22]]})
    (folder / "prompt.json").write_text('{\n  "prompt": "a deer standing in a field"\n}')
    return folder


# --- PIE-Bench --------------------------------------------------------------------------------------

def encode_rle(mask: np.ndarray) -> list[int]:
    """Row-major runs of ones as PIE-Bench stores them: [start0, length0, start1, length1, …]."""
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def pie_entry(image_path: str, type_id: str, rle: list[int], blended: str = "bicycle bicycle") -> dict[str, Any]:
    return {
        "image_path": image_path,
        "original_prompt": "a [round] mountain bicycle on the road",
        "editing_prompt": "a [square] [rusty] mountain bicycle on the road",
        "editing_instruction": "Make the bike rusty",
        "editing_type_id": type_id,
        "blended_word": blended,
        "mask": rle,
    }


def pie_object_mask() -> np.ndarray:
    m = np.zeros((512, 512), bool)
    m[100:220, 300:460] = True
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True  # the stored RLE already contains the border runs
    return m


def write_pie_bench(root: Path, entries: dict[str, dict[str, Any]] | None = None, size: int = 512) -> Path:
    """`mapping_file.json` with a flat type-0 entry, a nested type-1 entry (an RLE whose last run
    overruns the image) and a type-9 entry with an empty RLE; plus their JPEGs."""
    if entries is None:
        entries = {
            "000000000000": pie_entry("0_random_140/000000000000.jpg", "0", encode_rle(pie_object_mask())),
            "111000000000": pie_entry("1_change_object_80/1_artificial/1_animal/111000000000.jpg", "1",
                                      [0, 513, 261000, 5000]),
            "921000000003": pie_entry("9_change_style_80/2_natural/4_outdoor/921000000003.jpg", "9", [], blended=""),
        }
    for i, entry in enumerate(entries.values()):
        write_image(root / "annotation_images" / entry["image_path"], gradient_image(size, size, i), quality=90)
    write_json(root / "mapping_file.json", entries)
    return root


# --- COCOEE -----------------------------------------------------------------------------------------

COCOEE_IDS = (1773, 900100376112)


def write_cocoee(root: Path, ids: Sequence[int] = COCOEE_IDS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "id_list.npy", np.asarray(ids, dtype=np.int64), allow_pickle=False)
    for i, coco_id in enumerate(ids):
        id12 = str(coco_id).zfill(12)
        w, h = 72 + 8 * i, 56
        write_image(root / "GT_3500" / f"{id12}_GT.png", gradient_image(w, h, i))
        write_image(root / "Ref_3500" / f"{id12}_ref.png", gradient_image(32, 40, i + 10))
        write_image(root / "Mask_bbox_3500" / f"{id12}_mask.png", box_mask(w, h, (10, 12, 40, 44), 255))
    return root


# --- instruction_folder -----------------------------------------------------------------------------


def write_instruction_folder(root: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """Two samples: one with a target image and both captions (MagicBrush-style), one with only the image and
    the instruction, in its own category."""
    w, h = size
    write_image(root / "images" / "cat.png", gradient_image(w, h, 0))
    write_image(root / "targets" / "cat.png", gradient_image(w, h, 5))
    write_image(root / "images" / "street.jpg", gradient_image(w, h, 1), quality=90)
    write_json(root / "instructions.json", {
        "cat": {"image": "images/cat.png", "instruction": "give the cat a red hat", "target": "targets/cat.png",
                "input_caption": "a cat on a sofa", "output_caption": "a cat wearing a red hat on a sofa"},
        "street": {"image": "images/street.jpg", "instruction": "make it night", "category": "global"},
    })
    return root


def sized_drag_dataset(sizes: dict[str, tuple[int, int]], unreadable: Sequence[str] = ()):
    """An in-memory `Dataset` of flat drag samples `sized/cat/<name>` with the given (width, height) each;
    `inspect` fails for the `unreadable` names, as for an image whose header cannot be read."""
    from harness.data.base import Dataset, DatasetLoader, SampleInfo
    from harness.types import DragSample

    class SizedLoader(DatasetLoader):
        name = "sized"

        def list_ids(self):
            return [f"sized/cat/{k}" for k in sizes]

        def load_sample(self, sample_id):
            w, h = sizes[sample_id.rsplit("/", 1)[1]]
            image = np.full((h, w, 3), ord(sample_id[-1]), np.uint8)
            return DragSample(sample_id=sample_id, image=image, prompt="", handles=np.zeros((1, 2)),
                              targets=np.ones((1, 2)), mask=np.ones((h, w), bool))

        def inspect(self, sample_id):
            name = sample_id.rsplit("/", 1)[1]
            if name in unreadable:
                raise OSError("unreadable header")
            return SampleInfo(sample_id, "cat", sizes[name])

    return Dataset(loader=SizedLoader())
