"""`dragbench_dr`, `dragbench_sr`: RegionDrag's region versions of DragBench-D and -S (datasets.md §5).

Each sample holds DragBench-D's files plus `meta_data_region.pkl` (same schema; `points` are dense
interleaved region correspondences, usually multiples of 8). As RegionDrag's `run_eval.py`: the region
file drives the edit (`dense_handles`/`dense_targets`, `edit_mask`, prompt) and the point file is what
metrics score (`handles`/`targets`, `mask`). DR keeps DragBench-D's categories; SR is flat.
"""
from __future__ import annotations

from pathlib import Path

from harness.data.dragbench import IMAGE, DragBenchD, read_meta
from harness.data.folders import DragAnnotation
from harness.registry import DATASETS

REGION_FILE = "meta_data_region.pkl"


class _RegionDragBench(DragBenchD):
    sample_files = (IMAGE, "meta_data.pkl", REGION_FILE)
    region_modes = ("file", "none", "from_points")
    option_defaults = {"regions": "file"}

    def parse(self, folder: Path) -> DragAnnotation:
        ann = super().parse(folder)
        prompt, dense_h, dense_t, edit_mask = read_meta(folder / REGION_FILE, ann.size)
        ann.dense_handles, ann.dense_targets, ann.edit_mask = dense_h, dense_t, edit_mask
        if prompt != ann.prompt:  # RegionDrag edits with the region file's prompt; `prompt` is the scoring one
            ann.meta["edit_prompt"] = prompt
        return ann


@DATASETS.register("dragbench_dr")
class DragBenchDR(_RegionDragBench):
    name = "dragbench_dr"
    nested = True


@DATASETS.register("dragbench_sr")
class DragBenchSR(_RegionDragBench):
    name = "dragbench_sr"
    nested = False
