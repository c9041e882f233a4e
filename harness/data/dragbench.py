"""`dragbench_d`: DragDiffusion's DragBench (205 samples, datasets.md §2).

`<root>/<category>/<sample>/original_image.png` + `meta_data.pkl` ({'prompt', 'points', 'mask'}, pickle
protocol 4, loaded through the allow-list unpickler); `user_drag.png` is a visualisation and is ignored.
`regions: from_points` derives dense pairs from the points and the mask (RegionDrag's region + points path).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.checks import binary_mask, check_keys, check_str, interleaved_pairs
from harness.data.folders import DragAnnotation, DragFolderLoader
from harness.data.safe_io import image_header, load_pickle
from harness.registry import DATASETS

META_KEYS = ("prompt", "points", "mask")
IMAGE = "original_image.png"


def read_meta(path: Path, size: tuple[int, int]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """A DragBench `meta_data*.pkl` → (prompt, handles, targets, bool mask), checked against an image of
    `size`; the schema is shared by the point file and RegionDrag's region file."""
    meta = check_keys(load_pickle(path), path, META_KEYS)
    prompt = check_str(meta["prompt"], path, "prompt")
    handles, targets = interleaved_pairs(meta["points"], path, "points", size)
    mask = binary_mask(meta["mask"], path, "mask", size, IMAGE)
    return prompt, handles, targets, mask


@DATASETS.register("dragbench_d")
class DragBenchD(DragFolderLoader):
    name = "dragbench_d"
    annotation = "meta_data.pkl"
    sample_files = (IMAGE, "meta_data.pkl")
    nested = True

    def parse(self, folder: Path) -> DragAnnotation:
        header = image_header(folder / IMAGE, IMAGE)
        path = folder / self.annotation
        prompt, handles, targets, mask = read_meta(path, header.size)
        return DragAnnotation(header.path, header.size, prompt, handles, targets, mask, source=path)
