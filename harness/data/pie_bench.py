"""`pie_bench`: PIE-Bench prompt editing (700 images, 10 edit types; datasets.md §6).

`<root>/mapping_file.json` (one entry per 12-digit id) + `<root>/annotation_images/<type folder>/…/<id>.jpg`.
Sample ids are `pie_bench/<type folder>/<id>` (e.g. `pie_bench/1_change_object_80/111000000000`), so
`categories` filters by edit type. Prompts keep their `[ ]` markers (`PromptEditSample.encode_*` strip
them for the text encoder); `blended_word` splits into the P2P local-blend words. Masks are RLE over the
row-major 512×512 image and decode exactly as the official evaluator's `mask_decode`, border forced to 1.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import numpy as np

from harness.data.base import DataError, DatasetLoader, SampleInfo
from harness.data.checks import check_keys, check_str, rle_mask
from harness.data.safe_io import files_fingerprint, image_header, read_image, read_json
from harness.registry import DATASETS
from harness.types import PromptEditSample

MASK_SHAPE = (512, 512)
EDIT_TYPES = {
    0: "random",
    1: "change_object",
    2: "add_object",
    3: "delete_object",
    4: "change_attribute_content",
    5: "change_attribute_pose",
    6: "change_attribute_color",
    7: "change_attribute_material",
    8: "change_background",
    9: "change_style",
}
FIELDS = ("image_path", "original_prompt", "editing_prompt", "editing_instruction", "editing_type_id",
          "blended_word", "mask")


def decode_rle(rle: Any, shape: tuple[int, int] = MASK_SHAPE, where: str = "mask") -> np.ndarray:
    """PIE-Bench RLE `[s0, n0, s1, n1, …]` → bool mask of `shape`, as the official `mask_decode`.

    Runs are clipped at the end of the image (`rle_mask`); then the 1-pixel border is forced to 1 ("to
    avoid annotation errors in boundary"), so even an empty list decodes to the border. Malformed lists
    are errors; the official decoder would silently skip or mis-index them.
    """
    mask = rle_mask(rle, shape, where)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


@DATASETS.register("pie_bench")
class PIEBench(DatasetLoader):
    name = "pie_bench"
    family = "prompt"
    option_defaults = {"mapping_file": "mapping_file.json", "images": "annotation_images"}

    def __init__(self, root: str | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self._mapping: dict[str, Mapping[str, Any]] | None = None
        self._ids: dict[str, str] | None = None  # sample id → mapping key

    @property
    def mapping_path(self) -> Path:
        return self.root_dir / self.options["mapping_file"]

    def _load_mapping(self) -> dict[str, Mapping[str, Any]]:
        if self._mapping is None:
            data = read_json(self.mapping_path, root=self.root_dir)
            if not isinstance(data, dict) or not data:
                raise DataError(f"{self.mapping_path}: expected a non-empty JSON object keyed by image id")
            ids: dict[str, str] = {}
            for key, entry in data.items():
                entry = check_keys(entry, self._where(key), FIELDS, exact=False)
                ids[f"{self.name}/{self._type_folder(key, entry)}/{key}"] = key
            self._mapping, self._ids = data, ids
        return self._mapping

    def _where(self, key: str) -> str:
        return f"{self.mapping_path}: entry {key!r}"

    def _type_folder(self, key: str, entry: Mapping[str, Any]) -> str:
        image_path = PurePosixPath(check_str(entry["image_path"], self._where(key), "image_path"))
        where = f"{self._where(key)}: field 'image_path'"
        if len(image_path.parts) < 2 or image_path.is_absolute() or ".." in image_path.parts:
            raise DataError(f"{where} {str(image_path)!r} must be a relative path <type folder>/…/<id>.jpg")
        if image_path.stem != key:
            raise DataError(f"{where}: file name {image_path.name!r} does not match the entry id")
        return image_path.parts[0]

    def list_ids(self) -> list[str]:
        self._load_mapping()
        assert self._ids is not None
        return list(self._ids)

    def _entry(self, sample_id: str) -> tuple[str, Mapping[str, Any]]:
        mapping = self._load_mapping()
        assert self._ids is not None
        if sample_id not in self._ids:
            raise DataError(f"{self.mapping_path}: no entry for sample {sample_id!r}")
        key = self._ids[sample_id]
        return key, mapping[key]

    def _parse(self, sample_id: str) -> dict[str, Any]:
        """Validate one entry and the header of its image; everything but the decoded pixels."""
        key, entry = self._entry(sample_id)
        where = self._where(key)
        text = {f: check_str(entry[f], where, f)
                for f in ("original_prompt", "editing_prompt", "editing_instruction", "blended_word")}
        type_id = entry["editing_type_id"]
        if not (isinstance(type_id, str) and type_id.isdigit() and int(type_id) in EDIT_TYPES):
            raise DataError(f"{where}: field 'editing_type_id': expected a string \"0\" … \"9\", got {type_id!r}")
        folder = self.split_id(sample_id)[0]
        if not folder.startswith(f"{type_id}_"):
            raise DataError(f"{where}: field 'image_path': folder {folder!r} does not belong to editing type {type_id}")
        image = self.root_dir / self.options["images"] / entry["image_path"]
        header = image_header(image, "source image", root=self.root_dir)
        if header.size != (MASK_SHAPE[1], MASK_SHAPE[0]):
            raise DataError(f"{image}: source image is {header.size[0]}x{header.size[1]}, but PIE-Bench masks "
                            f"({where}: field 'mask') are defined on {MASK_SHAPE[1]}x{MASK_SHAPE[0]}")
        mask = decode_rle(entry["mask"], MASK_SHAPE, where=f"{where}: field 'mask'")
        return {"key": key, "entry": entry, "text": text, "type_id": int(type_id), "image": image,
                "size": header.size, "mask": mask, "category": folder}

    def inspect(self, sample_id: str) -> SampleInfo:
        p = self._parse(sample_id)
        return SampleInfo(sample_id, p["category"], p["size"])

    def load_sample(self, sample_id: str) -> PromptEditSample:
        p = self._parse(sample_id)
        text = p["text"]
        return PromptEditSample(
            sample_id=sample_id, image=read_image(p["image"], "source image", root=self.root_dir),
            source_prompt=text["original_prompt"], target_prompt=text["editing_prompt"],
            blended_words=tuple(w for w in text["blended_word"].split(" ") if w), mask=p["mask"],
            edit_type=p["type_id"], edit_type_name=EDIT_TYPES[p["type_id"]], instruction=text["editing_instruction"],
            category=p["category"], meta={"image_path": p["entry"]["image_path"], "pie_id": p["key"]})

    def fingerprint(self, sample_id: str) -> str:
        key, entry = self._entry(sample_id)
        image = self.root_dir / self.options["images"] / str(entry["image_path"])
        return files_fingerprint([image], extra=json.dumps(entry, sort_keys=True).encode())
