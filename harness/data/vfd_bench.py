"""`vfd_bench`: FlowDrag's VFD-Bench (ICML'25; ~250–263 samples, protocols_2025.md §6.5), the drag
benchmark with a ground truth: each drag pairs a video frame with a later frame of the same shot.

Flat layout `<root>/<name>/` with `input.png` (RGB, the earlier frame: the source), `gt.png` (RGB, the
later frame: the ground truth, same size), `mask.png` (8-bit grey, {0, 255}; 255 = editable),
`points.json` (`{"points": [[x, y], ...]}`, interleaved handle/target: the user's pairs),
`points_flowdrag.json` (the same first pair plus pairs FlowDrag sampled from the optical flow) and
`prompt.json` (`{"prompt": "<BLIP caption>"}`). `overlap.png` and the visualisation JPEGs are ignored.

`points: user` (default) edits and scores with `points.json`, as the paper scores MD; `points: flowdrag`
uses `points_flowdrag.json` (FlowDrag's own input). `gt.png` goes on the sample as `ground_truth`; a
sample without it loads with `ground_truth=None` (its `*_gt@vfd` metrics are undefined, and `describe`
reports the share of samples with a ground truth).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.data.base import DataError
from harness.data.checks import binary_mask, check_keys, check_str, interleaved_pairs
from harness.data.folders import DragAnnotation, DragFolderLoader
from harness.data.safe_io import files_fingerprint, image_header, read_json, read_mask
from harness.registry import DATASETS

IMAGE, TRUTH, MASK, PROMPT = "input.png", "gt.png", "mask.png", "prompt.json"
POINT_FILES = {"user": "points.json", "flowdrag": "points_flowdrag.json"}


@DATASETS.register("vfd_bench")
class VfdBench(DragFolderLoader):
    name = "vfd_bench"
    annotation = PROMPT
    sample_files = (IMAGE, TRUTH, MASK, PROMPT, *POINT_FILES.values())  # every file checked against the root
    nested = False
    option_defaults = {"regions": "none", "points": "user"}

    def __init__(self, root: str | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self.check_choice("points", POINT_FILES)

    @property
    def points_file(self) -> str:
        return POINT_FILES[self.options["points"]]

    def parse(self, folder: Path) -> DragAnnotation:
        header = image_header(folder / IMAGE, "source image")
        truth = None
        if (folder / TRUTH).exists() or (folder / TRUTH).is_symlink():
            truth_header = image_header(folder / TRUTH, "ground truth")
            if truth_header.size != header.size:
                raise DataError(f"{folder / TRUTH}: field 'ground truth': {truth_header.size[0]}x"
                                f"{truth_header.size[1]}, but {IMAGE} is {header.size[0]}x{header.size[1]}")
            truth = truth_header.path
        prompt_path = folder / PROMPT
        prompt = check_str(check_keys(read_json(prompt_path), prompt_path, ("prompt",))["prompt"], prompt_path,
                           "prompt")
        points_path = folder / self.points_file
        points = check_keys(read_json(points_path), points_path, ("points",))["points"]
        handles, targets = interleaved_pairs(points, points_path, "points", header.size)
        mask = binary_mask(read_mask(folder / MASK, MASK), folder / MASK, "mask", header.size, IMAGE)
        return DragAnnotation(header.path, header.size, prompt, handles, targets, mask, source=points_path,
                              ground_truth=truth)

    def fingerprint(self, sample_id: str) -> str:
        folder = self.folder(sample_id)
        names = [IMAGE, MASK, PROMPT, self.points_file] + ([TRUTH] if (folder / TRUTH).is_file() else [])
        return files_fingerprint([folder / name for name in names])
