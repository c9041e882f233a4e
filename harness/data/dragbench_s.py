"""`dragbench_s`: SDE-Drag's DragBench (100 samples, datasets.md §4).

Flat layout `<root>/<name>/` with `origin_image.png`, `mask.png` (single channel) and `prompt.json`
(`{"prompt", "source": [[x, y], ...], "target": [[x, y], ...]}`, `source[i]` pairs with `target[i]`).
Every directory holding `prompt.json` is a sample (the reference script instead matches the digits 0–16
in folder names). The mask is binarised as SDE-Drag does, `> 128`.
"""
from __future__ import annotations

from pathlib import Path

from harness.data.base import DataError
from harness.data.checks import binary_mask, check_inside, check_keys, check_str, point_array
from harness.data.folders import DragAnnotation, DragFolderLoader
from harness.data.safe_io import image_header, read_json, read_mask
from harness.registry import DATASETS

IMAGE, MASK, PROMPT = "origin_image.png", "mask.png", "prompt.json"
MASK_THRESHOLD = 128


@DATASETS.register("dragbench_s")
class DragBenchS(DragFolderLoader):
    name = "dragbench_s"
    annotation = PROMPT
    sample_files = (IMAGE, MASK, PROMPT)
    nested = False

    def parse(self, folder: Path) -> DragAnnotation:
        header = image_header(folder / IMAGE, IMAGE)
        path = folder / PROMPT
        data = check_keys(read_json(path), path, ("prompt", "source", "target"), exact=False)
        prompt = check_str(data["prompt"], path, "prompt")
        handles, targets = point_array(data["source"], path, "source"), point_array(data["target"], path, "target")
        if len(handles) != len(targets):
            raise DataError(f"{path}: fields 'source' ({len(handles)} points) and 'target' ({len(targets)} "
                            "points) must have the same length")
        check_inside(handles, path, "source", header.size)
        check_inside(targets, path, "target", header.size)
        mask = binary_mask(read_mask(folder / MASK, MASK), folder / MASK, "mask", header.size, IMAGE,
                           threshold=MASK_THRESHOLD)
        return DragAnnotation(header.path, header.size, prompt, handles.astype(float), targets.astype(float), mask,
                              source=path)
