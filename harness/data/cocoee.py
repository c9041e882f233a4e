"""`cocoee`: Paint-by-Example's COCO Exemplar-based test bench (3,500 triplets; datasets.md §7).

`<root>` is the `test_bench` folder: `id_list.npy` (int64, read with `allow_pickle=False`) and, per id with
`id12 = str(id).zfill(12)`, `GT_3500/{id12}_GT.png` (source), `Ref_3500/{id12}_ref.png` (exemplar) and
`Mask_bbox_3500/{id12}_mask.png` (grey box mask, 255 = region to fill). Sample ids are `cocoee/all/<id12>`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.data.base import DataError, DatasetLoader, SampleInfo
from harness.data.checks import binary_mask
from harness.data.safe_io import files_fingerprint, image_header, read_image, read_mask, read_npy
from harness.registry import DATASETS
from harness.types import ExemplarSample

CATEGORY = "all"
MASK_THRESHOLD = 127


@DATASETS.register("cocoee")
class COCOEE(DatasetLoader):
    name = "cocoee"
    family = "exemplar"
    option_defaults = {"id_list": "id_list.npy"}

    def __init__(self, root: str | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self._ids: list[str] | None = None

    def list_ids(self) -> list[str]:
        if self._ids is None:
            path = self.root_dir / self.options["id_list"]
            ids = read_npy(path, root=self.root_dir)
            if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) == 0:
                raise DataError(f"{path}: expected a non-empty 1-D integer array of COCO ids, got "
                                f"{ids.dtype} {ids.shape}")
            if (ids < 0).any():
                raise DataError(f"{path}: negative id {int(ids[ids < 0][0])}")
            names = [str(int(i)).zfill(12) for i in ids]
            if len(set(names)) != len(names):
                raise DataError(f"{path}: duplicate ids")
            self._ids = [f"{self.name}/{CATEGORY}/{n}" for n in names]
        return list(self._ids)

    def files(self, sample_id: str) -> tuple[Path, Path, Path]:
        """(source, exemplar, mask) paths of one sample."""
        category, id12 = self.split_id(sample_id)
        if category != CATEGORY or not id12.isdigit():
            raise DataError(f"dataset {self.name!r}: invalid sample id {sample_id!r}")
        root = self.root_dir
        return (root / "GT_3500" / f"{id12}_GT.png", root / "Ref_3500" / f"{id12}_ref.png",
                root / "Mask_bbox_3500" / f"{id12}_mask.png")

    def _mask(self, sample_id: str) -> tuple[tuple[int, int], np.ndarray]:
        source, reference, mask_path = self.files(sample_id)
        root = self.root_dir
        size = image_header(source, "source image (GT)", root=root).size
        image_header(reference, "exemplar image (ref)", root=root)
        mask = binary_mask(read_mask(mask_path, "mask", root=root), mask_path, "mask", size, source.name,
                           threshold=MASK_THRESHOLD)
        return size, mask

    def inspect(self, sample_id: str) -> SampleInfo:
        size, _ = self._mask(sample_id)
        return SampleInfo(sample_id, CATEGORY, size)

    def load_sample(self, sample_id: str) -> ExemplarSample:
        _, mask = self._mask(sample_id)
        source, reference, _ = self.files(sample_id)
        return ExemplarSample(sample_id=sample_id, image=read_image(source, "source image (GT)", root=self.root_dir),
                              mask=mask, reference=read_image(reference, "exemplar image (ref)", root=self.root_dir), category=CATEGORY)

    def fingerprint(self, sample_id: str) -> str:
        return files_fingerprint(self.files(sample_id))
