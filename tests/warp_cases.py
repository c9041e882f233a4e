"""Inputs of the warping parity cases (tests/test_warping.py): Inpaint4Drag `bi_warp` on convex, two-blob,
holed and image-boundary masks with one or several control pairs, and FastDrag warpage + BNNI on random
(1, 4, 16, 16) latents with soft random masks and 1–3 handles (case 0 of each seed on an exact grid point).

`tests/fixtures/warp_release.npz` holds the released functions' outputs on these inputs (Inpaint4Drag
@126ac0c `utils/drag.py::bi_warp`, FastDrag @def3c4e `utils/continuous_drag.py`), written by
`python -m tests.warp_cases <release dir> <out.npz>` with the fetched releases under <release dir>/Inpaint4Drag
and <release dir>/FastDrag (never committed)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

SHAPE = (64, 80)


def region_masks() -> dict[str, np.ndarray]:
    convex = np.zeros(SHAPE, np.uint8)
    cv2.circle(convex, (40, 30), 14, 1, -1)
    two_blob = np.zeros(SHAPE, np.uint8)
    cv2.rectangle(two_blob, (5, 5), (25, 30), 1, -1)
    cv2.circle(two_blob, (60, 45), 10, 1, -1)
    holed = np.zeros(SHAPE, np.uint8)
    cv2.circle(holed, (40, 32), 20, 1, -1)
    cv2.circle(holed, (40, 32), 8, 0, -1)
    boundary = np.zeros(SHAPE, np.uint8)
    boundary[40:, 50:] = 1
    return {"convex": convex, "two_blob": two_blob, "holed": holed, "boundary": boundary}


BI_WARP_CASES = {
    "convex_one": ("convex", [[40, 30], [47, 26]]),
    "convex_several": ("convex", [[40, 30], [47, 26], [33, 25], [30, 22], [45, 38], [50, 44]]),
    "convex_fractional_target": ("convex", [[40, 30], [46.5, 27.25]]),
    "two_blob_one_each": ("two_blob", [[10, 10], [14, 15], [60, 45], [55, 50]]),
    "two_blob_one_region_only": ("two_blob", [[60, 45], [66, 40]]),
    "two_blob_several": ("two_blob", [[10, 10], [14, 15], [20, 25], [24, 28], [60, 45], [55, 50], [62, 50], [58, 55]]),
    "holed_one": ("holed", [[25, 32], [30, 36]]),
    "holed_several": ("holed", [[25, 32], [30, 36], [55, 30], [58, 25]]),
    "boundary_off_image": ("boundary", [[79, 63], [75, 60], [60, 50], [70, 58]]),
    "boundary_corner_handle": ("boundary", [[79, 63], [70, 55]]),
    "no_handle_in_region": ("convex", [[2, 2], [5, 5]]),
}


def fastdrag_case(seed: int, n_handles: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latent (1,4,16,16), soft mask (1,1,16,16), handles, targets (N, 2) (row, col) at supervision scale ×4)."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 4, 16, 16, generator=g)
    mask = torch.zeros(1, 1, 16, 16)
    y0, x0 = int(torch.randint(0, 5, (1,), generator=g)), int(torch.randint(0, 5, (1,), generator=g))
    mask[..., y0:y0 + 8 + seed % 3, x0:x0 + 7] = torch.rand(8 + seed % 3, 7, generator=g) * 0.9 + 0.1
    inside = torch.nonzero(mask[0, 0] > 0).float()
    handles, targets = [], []
    for i in range(n_handles):
        cell = inside[int(torch.randint(0, len(inside), (1,), generator=g))]
        offset = torch.zeros(2) if i == 0 else torch.randint(-1, 2, (2,), generator=g).float()
        handles.append(cell * 4 + offset)
        targets.append(handles[-1] + torch.randint(-8, 9, (2,), generator=g).float())
    return latent, mask, torch.stack(handles), torch.stack(targets)


FASTDRAG_CASES = [(seed, n) for seed in range(4) for n in (1, 2, 3)]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release_outputs(release_dir: Path) -> dict[str, np.ndarray]:
    """Every case through the released functions (imported from the fetched copies, CPU)."""
    drag = _load(release_dir / "Inpaint4Drag" / "utils" / "drag.py", "release_inpaint4drag_drag")
    stretch = _load(release_dir / "FastDrag" / "utils" / "continuous_drag.py", "release_fastdrag_continuous_drag")
    masks, out = region_masks(), {}
    for name, (mask_name, points) in BI_WARP_CASES.items():
        source, target, inpaint = drag.bi_warp(masks[mask_name].copy(), [[float(v) for v in p] for p in points], 5)
        out.update({f"{name}/source": source, f"{name}/target": target, f"{name}/mask": inpaint})
    for seed, n in FASTDRAG_CASES:
        latent, mask, handles, targets = fastdrag_case(seed, n)
        for fill in ("0", "interpolation"):
            z = stretch.drag_stretch_multipoint_ratio_interp(latent.clone(), list(handles), list(targets), mask, fill_mode=fill)
            out[f"fastdrag_{seed}_{n}/{'warp' if fill == '0' else 'bnni'}"] = z.numpy()
    return out


if __name__ == "__main__":
    np.savez_compressed(sys.argv[2], **release_outputs(Path(sys.argv[1])))
