"""`instruction_folder`: a folder of (image, instruction) pairs for instruction editors (card:
datasets/instruction_folder.md).

`<root>/instructions.json` is a JSON object keyed by sample name; each entry has `image` (a path relative to
the root) and `instruction`, and optionally `target` (the reference result, same size as the image: what the
`@magicbrush` metrics score against), `input_caption` / `output_caption` (the captions of the source and of
the wanted result: CLIP-dir, CLIP-T / CLIP-out) and `category` (default `all`). Sample ids are
`instruction_folder/<category>/<name>`. Why one manifest rather than a `.txt` beside each image: the optional
fields and the target need a place, and one file gives one place for every error to name.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from harness.data.base import DataError, DatasetLoader, SampleInfo
from harness.data.checks import check_keys, check_str
from harness.data.safe_io import files_fingerprint, image_header, read_image, read_json
from harness.registry import DATASETS
from harness.types import PromptEditSample

REQUIRED = ("image", "instruction")
OPTIONAL = ("target", "input_caption", "output_caption", "category")
DEFAULT_CATEGORY = "all"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # one path component of a sample id


@DATASETS.register("instruction_folder")
class InstructionFolder(DatasetLoader):
    name = "instruction_folder"
    family = "prompt"
    option_defaults = {"manifest": "instructions.json"}

    def __init__(self, root: str | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self._entries: dict[str, tuple[str, Mapping[str, Any]]] | None = None  # sample id → (name, entry)

    @property
    def manifest(self) -> Path:
        return self.root_dir / self.options["manifest"]

    def _where(self, name: str) -> str:
        return f"{self.manifest}: entry {name!r}"

    def _load(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        if self._entries is None:
            data = read_json(self.manifest, root=self.root_dir)
            if not isinstance(data, dict) or not data:
                raise DataError(f"{self.manifest}: expected a non-empty JSON object keyed by sample name")
            entries = {}
            for name, entry in data.items():
                where = self._where(name)
                if not _NAME.match(name):
                    raise DataError(f"{where}: a sample name must be letters, digits, '.', '_' or '-' (it becomes "
                                    "part of the sample id)")
                entry = check_keys(entry, where, REQUIRED, exact=False)
                extra = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
                if extra:
                    raise DataError(f"{where}: unknown field(s) {extra}; valid: {list(REQUIRED + OPTIONAL)}")
                for key in entry:
                    check_str(entry[key], where, key)
                category = entry.get("category", DEFAULT_CATEGORY)
                if not _NAME.match(category):
                    raise DataError(f"{where}: field 'category' {category!r} must be letters, digits, '.', '_' or '-'")
                entries[f"{self.name}/{category}/{name}"] = (name, entry)
            self._entries = entries
        return self._entries

    def list_ids(self) -> list[str]:
        return sorted(self._load())

    def _entry(self, sample_id: str) -> tuple[str, Mapping[str, Any]]:
        entries = self._load()
        if sample_id not in entries:
            raise DataError(f"{self.manifest}: no entry for sample {sample_id!r}")
        return entries[sample_id]

    def _files(self, sample_id: str) -> tuple[Path, Path | None]:
        """(image, target or None), header-checked: the target must have the image's size."""
        name, entry = self._entry(sample_id)
        image = self.root_dir / entry["image"]
        size = image_header(image, f"{self._where(name)}: field 'image'", root=self.root_dir).size
        if "target" not in entry:
            return image, None
        target = self.root_dir / entry["target"]
        target_size = image_header(target, f"{self._where(name)}: field 'target'", root=self.root_dir).size
        if target_size != size:
            raise DataError(f"{self._where(name)}: field 'target' is {target_size[0]}x{target_size[1]}, the image "
                            f"{size[0]}x{size[1]}; a target must have the source image's size")
        return image, target

    def inspect(self, sample_id: str) -> SampleInfo:
        image, target = self._files(sample_id)
        size = image_header(image, "image", root=self.root_dir).size
        return SampleInfo(sample_id, self.split_id(sample_id)[0], size, ground_truth=target is not None)

    def load_sample(self, sample_id: str) -> PromptEditSample:
        name, entry = self._entry(sample_id)
        image, target = self._files(sample_id)
        where = self._where(name)
        return PromptEditSample(
            sample_id=sample_id, image=read_image(image, f"{where}: field 'image'", root=self.root_dir),
            source_prompt=entry.get("input_caption", ""), target_prompt=entry.get("output_caption", ""),
            instruction=entry["instruction"], category=self.split_id(sample_id)[0], meta={"image_path": entry["image"]},
            ground_truth=None if target is None else read_image(target, f"{where}: field 'target'", root=self.root_dir))

    def fingerprint(self, sample_id: str) -> str:
        _, entry = self._entry(sample_id)
        image, target = self._files(sample_id)
        return files_fingerprint([image] + ([target] if target else []),
                                 extra=json.dumps(entry, sort_keys=True).encode())
