"""`demo`: a handful of small drag samples generated deterministically (no files needed).

Coloured shapes on a smooth background, each to be moved by a region pair of a different kind, so that
the three region mappings (affine triangle, perspective quadrilateral, brushed mask) all run in every demo.
Sizes are small for the CPU budget, and two heights are not multiples of 8 (like DragBench's 512×341).
"""
from __future__ import annotations

import hashlib

import numpy as np

from harness.data.base import DataError, DatasetLoader
from harness.regions import regions_to_dense_points
from harness.registry import DATASETS
from harness.types import DragSample, RegionPair


def _background(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.35 + 0.3 * xs, 0.45 + 0.25 * ys, 0.6 - 0.2 * xs * ys], axis=-1)
    return np.clip(base + rng.normal(0, 0.02, (h, w, 3)), 0, 1)


def _disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r ** 2


def _polygon_mask(h: int, w: int, vertices: np.ndarray) -> np.ndarray:
    import cv2

    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.asarray(vertices, np.int32)], 1)
    return m.astype(bool)


def _paint(image: np.ndarray, mask: np.ndarray, colour: tuple[float, float, float]) -> None:
    image[mask] = colour


def _make(name: str) -> DragSample:
    if name == "square_right":
        h, w = 96, 96
        img = _background(h, w, 1)
        handle = np.array([[16, 32], [40, 32], [40, 56], [16, 56]], float)
        _paint(img, _polygon_mask(h, w, handle), (0.85, 0.15, 0.1))
        region = RegionPair("polygon", handle, handle + [24, 0])
        points = ([[28, 44]], [[52, 44]])
        prompt, editable = "a red square on a gradient background", np.ones((h, w), bool)
    elif name == "triangle_up":
        h, w = 84, 112
        img = _background(h, w, 2)
        tri = np.array([[40, 64], [72, 64], [56, 40]], float)
        _paint(img, _polygon_mask(h, w, tri), (0.1, 0.3, 0.85))
        region = RegionPair("polygon", tri, tri - [0, 16])
        points = ([[56, 56], [48, 62]], [[56, 40], [48, 46]])
        editable = np.zeros((h, w), bool)
        editable[16:76, 24:88] = True
        prompt = "a blue triangle"
    elif name == "disc_brush":
        h, w = 76, 104
        img = _background(h, w, 3)
        src = _disc(h, w, 32, 38, 12)
        _paint(img, src, (0.95, 0.8, 0.1))
        region = RegionPair("mask", src, _disc(h, w, 64, 34, 12))
        points = ([[32, 38]], [[64, 34]])
        editable = np.zeros((h, w), bool)
        editable[12:64, 12:88] = True
        prompt = "a yellow disc"
    else:
        raise DataError(f"demo: unknown sample {name!r}")
    dense_h, dense_t = regions_to_dense_points([region])
    image = (img * 255).round().astype(np.uint8)
    return DragSample(sample_id=f"demo/shapes/{name}", image=image, prompt=prompt, handles=points[0],
                      targets=points[1], mask=editable, regions=(region,), dense_handles=dense_h,
                      dense_targets=dense_t, category="shapes")


@DATASETS.register("demo")
class DemoDataset(DatasetLoader):
    name = "demo"
    family = "drag"
    SAMPLES = ("disc_brush", "square_right", "triangle_up")

    def list_ids(self) -> list[str]:
        return [f"demo/shapes/{n}" for n in self.SAMPLES]

    def load_sample(self, sample_id: str) -> DragSample:
        return _make(sample_id.rsplit("/", 1)[-1])

    def fingerprint(self, sample_id: str) -> str:
        s = self.load_sample(sample_id)
        return hashlib.sha256(s.image.tobytes() + s.mask.tobytes()).hexdigest()[:16]
