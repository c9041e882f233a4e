"""The copy-paste baseline moves whole regions: on the demo's three region kinds (affine triangle,
perspective quadrilateral, brushed mask) every pixel of the target region holds the handle region's pixel,
and dense pairs without drawn regions move whole latent cells, not single pixels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from harness.data.demo import DemoDataset
from harness.registry import METHODS
from methods.copy_paste import CELL, mask_shift


def edit(sample, **config):
    return METHODS.get("copy_paste").build(config).edit(sample, 42)


def target_pixels(region, shape):
    if region.kind == "mask":
        return np.nonzero(region.target)
    inside = np.zeros(shape, np.uint8)
    cv2.fillPoly(inside, [np.round(region.target).astype(np.int32)], 1)
    return np.nonzero(inside)


@pytest.mark.parametrize("name,kind,vertices", [("triangle_up", "polygon", 3), ("square_right", "polygon", 4),
                                                ("disc_brush", "mask", None)])
def test_the_target_region_holds_the_moved_handle_region(name, kind, vertices):
    sample = DemoDataset().load_sample(f"demo/shapes/{name}")
    (region,) = sample.regions
    assert region.kind == kind and (vertices is None or len(region.handle) == vertices)
    # the demo's regions are translations, so the warped handle pixel of target pixel p is source[p - shift]
    if kind == "polygon":
        shift = region.target[0] - region.handle[0]
        assert np.allclose(region.target - region.handle, shift)
        dx, dy = shift.astype(int)
    else:
        dx, dy = mask_shift(region)
        assert (dx, dy) == (32, -4)
    result = edit(sample)
    ys, xs = target_pixels(region, sample.image.shape[:2])
    assert len(ys) > 200
    np.testing.assert_array_equal(result.image[ys, xs], sample.image[ys - dy, xs - dx])
    # …which is the shape itself (one flat colour), not the background with a few dots
    colour = sample.image[ys - dy, xs - dx]
    assert (np.abs(result.image[ys, xs].astype(int) - np.median(colour, axis=0)).max(axis=1) <= 1).mean() > 0.9
    assert result.info["copied"] == "regions"


def test_dense_pairs_without_regions_move_whole_latent_cells():
    sample = DemoDataset().load_sample("demo/shapes/square_right").replace(regions=())
    result = edit(sample)
    assert result.info["copied"] == "cells" and CELL == 8
    for (hx, hy), (tx, ty) in zip(sample.dense_handles.astype(int), sample.dense_targets.astype(int)):
        np.testing.assert_array_equal(result.image[ty:ty + 8, tx:tx + 8], sample.image[hy:hy + 8, hx:hx + 8])
    moved = np.zeros(sample.image.shape[:2], bool)
    for tx, ty in sample.dense_targets.astype(int):
        moved[ty:ty + 8, tx:tx + 8] = True
    assert moved.sum() == 64 * len(sample.dense_targets)  # every pixel of every target cell, no dots


def test_sparse_points_copy_a_patch_around_each_point():
    sample = DemoDataset().load_sample("demo/shapes/triangle_up").replace(regions=(), dense_handles=None,
                                                                           dense_targets=None)
    result = edit(sample, radius=2)
    assert result.info == {"copied": "patches", "pairs": 2}
    for (hx, hy), (tx, ty) in zip(sample.handles.astype(int), sample.targets.astype(int)):
        np.testing.assert_array_equal(result.image[ty - 2:ty + 3, tx - 2:tx + 3], sample.image[hy - 2:hy + 3, hx - 2:hx + 3])
    assert (result.image != sample.image).any(axis=-1).sum() <= 2 * 25
