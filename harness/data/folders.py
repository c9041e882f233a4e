"""Shared plumbing of the folder-per-sample drag formats (DragBench-D/-S/-DR/-SR, Drag100).

Each format differs only in file names and in how one annotation is parsed; listing, sample ids,
fingerprints, the `regions` option and building the `DragSample` live here once.

A directory is a sample if and only if it holds the format's annotation file; everything else (dot-files,
stray scripts, visualisations) is ignored and never opened. Layouts are `<root>/<category>/<name>/` or,
for flat formats, `<root>/<name>/` with the fixed category `all`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.data.base import DataError, DatasetLoader, SampleInfo
from harness.data.safe_io import files_fingerprint, read_image, resolve_inside
from harness.regions import region_and_points_to_dense
from harness.types import DragSample

FLAT_CATEGORY = "all"


@dataclass
class DragAnnotation:
    """One parsed and validated sample, before its source image is decoded."""

    image: Path
    size: tuple[int, int]  # (width, height) from the image header
    prompt: str
    handles: np.ndarray
    targets: np.ndarray
    mask: np.ndarray  # bool, True = editable (the scoring mask)
    source: Path  # the file the points and mask came from (named in region errors)
    dense_handles: np.ndarray | None = None
    dense_targets: np.ndarray | None = None
    edit_mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    ground_truth: Path | None = None  # header-checked against `size` by the loader's `parse`


class DragFolderLoader(DatasetLoader):
    family = "drag"
    annotation: ClassVar[str]  # a directory is a sample iff it holds this file
    sample_files: ClassVar[tuple[str, ...]]  # the files that define a sample (fingerprint)
    nested: ClassVar[bool] = True
    region_modes: ClassVar[tuple[str, ...]] = ("none", "from_points")
    option_defaults = {"regions": "none"}

    def __init__(self, root: str | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self.check_choice("regions", self.region_modes)
        self._ids: list[str] | None = None

    # --- listing -----------------------------------------------------------------------------------

    def _sample_dirs(self) -> list[tuple[str, Path]]:
        root = self.root_dir
        if self.nested:
            parents = [(d.name, d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        else:
            parents = [(FLAT_CATEGORY, root)]
        return [(category, d) for category, parent in parents for d in sorted(parent.iterdir())
                if d.is_dir() and not d.name.startswith(".") and (d / self.annotation).is_file()]

    def list_ids(self) -> list[str]:
        if self._ids is None:
            ids = [f"{self.name}/{category}/{d.name}" for category, d in self._sample_dirs()]
            if not ids:
                layout = "<category>/<sample>" if self.nested else "<sample>"
                raise DataError(f"dataset {self.name!r}: no samples under {self.root_dir} (expected "
                                f"{layout}/{self.annotation})")
            self._ids = ids
        return list(self._ids)

    def folder(self, sample_id: str) -> Path:
        category, name = self.split_id(sample_id)
        if not self.nested and category != FLAT_CATEGORY:
            raise DataError(f"dataset {self.name!r}: invalid sample id {sample_id!r} (category must be "
                            f"{FLAT_CATEGORY!r})")
        path = self.root_dir / category / name if self.nested else self.root_dir / name
        if not (path / self.annotation).is_file():
            raise DataError(f"{path / self.annotation}: file not found (sample {sample_id})")
        return path

    # --- parsing -----------------------------------------------------------------------------------

    def parse(self, folder: Path) -> DragAnnotation:  # pragma: no cover - interface
        """Read and validate the annotation; read only the header of the source image."""
        raise NotImplementedError

    def _annotate(self, sample_id: str) -> DragAnnotation:
        folder = self.folder(sample_id)
        for name in self.sample_files:  # a file linked to outside the root is refused before it is read
            if (folder / name).exists() or (folder / name).is_symlink():
                resolve_inside(self.root_dir, folder / name, name)
        ann = self.parse(folder)
        if self.options["regions"] == "none":
            ann.dense_handles = ann.dense_targets = ann.edit_mask = None
        elif self.options["regions"] == "from_points":
            ann.edit_mask = None
            ann.dense_handles, ann.dense_targets = region_and_points_to_dense(ann.mask, ann.handles, ann.targets)
            if len(ann.dense_handles) == 0:
                raise DataError(f"{ann.source}: regions=from_points found no handle point inside the mask "
                                "(field 'mask'), so the region has no motion")
        return ann

    def inspect(self, sample_id: str) -> SampleInfo:
        ann = self._annotate(sample_id)
        dense = None if ann.dense_handles is None else len(ann.dense_handles)
        return SampleInfo(sample_id, self.split_id(sample_id)[0], ann.size, len(ann.handles), dense,
                          ann.ground_truth is not None)

    def load_sample(self, sample_id: str) -> DragSample:
        ann = self._annotate(sample_id)
        image = read_image(ann.image, ann.image.name)
        if (image.shape[1], image.shape[0]) != ann.size:  # pragma: no cover - PIL reports the decoded size
            raise DataError(f"{ann.image}: decoded size {image.shape[1]}x{image.shape[0]} differs from the header")
        truth = None if ann.ground_truth is None else read_image(ann.ground_truth, ann.ground_truth.name)
        if truth is not None and truth.shape != image.shape:  # pragma: no cover - PIL reports the decoded size
            raise DataError(f"{ann.ground_truth}: decoded size {truth.shape[1]}x{truth.shape[0]} differs from the header")
        return DragSample(sample_id=sample_id, image=image, prompt=ann.prompt, handles=ann.handles,
                          targets=ann.targets, mask=ann.mask, dense_handles=ann.dense_handles,
                          dense_targets=ann.dense_targets, edit_mask=ann.edit_mask,
                          category=self.split_id(sample_id)[0], meta=ann.meta, ground_truth=truth)

    def fingerprint(self, sample_id: str) -> str:
        folder = self.folder(sample_id)
        return files_fingerprint([folder / name for name in self.sample_files])
