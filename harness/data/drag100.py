"""`drag100`: GoodDrag's Drag100 (100 samples, datasets.md §3).

Flat layout `<root>/<name>/` with `original.jpg` (RGB JPEG), `mask.png` (8-bit grey, {0, 255}) and
`points.json` (`{"points": [[x, y], ...]}`, interleaved handle/target). There is no prompt: GoodDrag's
bench script edits with `''`. `image_with_points.jpg` is a visualisation and is ignored.
"""
from __future__ import annotations

from pathlib import Path

from harness.data.checks import binary_mask, check_keys, interleaved_pairs
from harness.data.folders import DragAnnotation, DragFolderLoader
from harness.data.safe_io import image_header, read_json, read_mask
from harness.registry import DATASETS

IMAGE, MASK, POINTS = "original.jpg", "mask.png", "points.json"


@DATASETS.register("drag100")
class Drag100(DragFolderLoader):
    name = "drag100"
    annotation = POINTS
    sample_files = (IMAGE, MASK, POINTS)
    nested = False

    def parse(self, folder: Path) -> DragAnnotation:
        header = image_header(folder / IMAGE, IMAGE)
        path = folder / POINTS
        points = check_keys(read_json(path), path, ("points",))["points"]
        handles, targets = interleaved_pairs(points, path, "points", header.size)
        mask = binary_mask(read_mask(folder / MASK, MASK), folder / MASK, "mask", header.size, IMAGE)
        return DragAnnotation(header.path, header.size, "", handles, targets, mask, source=path)
