"""`dragbench_dr`, `dragbench_sr`: RegionDrag's region versions of DragBench-D and -S (datasets.md §5).

Each sample holds DragBench-D's files plus `meta_data_region.pkl` (same schema; `points` are dense
interleaved region correspondences, usually multiples of 8). As RegionDrag's `run_eval.py`: the region
file drives the edit (`dense_handles`/`dense_targets`, `edit_mask`, prompt) and the point file is what
metrics score (`handles`/`targets`, `mask`). DR keeps DragBench-D's categories; SR is flat.

`annotations: i4p` edits with Inpaint4Drag's inputs instead (protocols_2025.md §1): `meta_data_i4p.pkl`,
`{'mask': H×W uint8 {0, 1} (possibly SAM-refined), 'points': [[x, y], …] alternating source/target Gradio
clicks}`, read through the same allow-list unpickler; its points become the edit pairs, its mask the edit
mask, and the edit prompt is `""` (Inpaint4Drag never uses one). Scoring still reads `meta_data.pkl`. With
this option a sample without the file is an error naming it.
"""
from __future__ import annotations

from pathlib import Path

from typing import Any

from harness.data.base import DataError
from harness.data.checks import binary_mask, check_keys, interleaved_pairs
from harness.data.dragbench import IMAGE, DragBenchD, read_meta
from harness.data.folders import DragAnnotation
from harness.data.safe_io import files_fingerprint, load_pickle
from harness.registry import DATASETS

REGION_FILE = "meta_data_region.pkl"
I4P_FILE = "meta_data_i4p.pkl"
ANNOTATIONS = ("region", "i4p")


class _RegionDragBench(DragBenchD):
    sample_files = (IMAGE, "meta_data.pkl", REGION_FILE, I4P_FILE)  # every file checked against the root
    region_modes = ("file", "none", "from_points")
    option_defaults = {"regions": "file", "annotations": "region"}

    def __init__(self, root: str | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self.check_choice("annotations", ANNOTATIONS)
        if self.options["annotations"] == "i4p" and self.options["regions"] != "file":
            raise DataError(f"dataset {self.name!r}: annotations=i4p reads the edit inputs from {I4P_FILE}, which "
                            f"needs regions=file (got regions={self.options['regions']!r})")

    def parse(self, folder: Path) -> DragAnnotation:
        if self.options["annotations"] == "i4p":
            return self._parse_i4p(folder)
        ann = super().parse(folder)
        prompt, dense_h, dense_t, edit_mask = read_meta(folder / REGION_FILE, ann.size)
        ann.dense_handles, ann.dense_targets, ann.edit_mask = dense_h, dense_t, edit_mask
        if prompt != ann.prompt:  # RegionDrag edits with the region file's prompt; `prompt` is the scoring one
            ann.meta["edit_prompt"] = prompt
        return ann

    def _parse_i4p(self, folder: Path) -> DragAnnotation:
        ann = DragBenchD.parse(self, folder)
        path = folder / I4P_FILE
        meta = check_keys(load_pickle(path), path, ("mask", "points"))
        ann.dense_handles, ann.dense_targets = interleaved_pairs(meta["points"], path, "points", ann.size)
        ann.edit_mask = binary_mask(meta["mask"], path, "mask", ann.size, IMAGE)
        ann.meta["edit_prompt"] = ""  # Inpaint4Drag edits without a prompt
        ann.meta["annotations"] = "i4p"
        return ann

    def fingerprint(self, sample_id: str) -> str:
        edit_file = I4P_FILE if self.options["annotations"] == "i4p" else REGION_FILE
        folder = self.folder(sample_id)
        return files_fingerprint([folder / name for name in (IMAGE, "meta_data.pkl", edit_file)])


@DATASETS.register("dragbench_dr")
class DragBenchDR(_RegionDragBench):
    name = "dragbench_dr"
    nested = True


@DATASETS.register("dragbench_sr")
class DragBenchSR(_RegionDragBench):
    name = "dragbench_sr"
    nested = False
