"""Region pairs → dense point pairs (RegionDrag's mappings) and point subsampling."""
from __future__ import annotations

import numpy as np
import pytest

from harness.regions import mask_pair_to_points, polygon_pair_to_points, regions_to_dense_points, subsample_pairs
from harness.types import RegionPair


def test_triangle_translation_maps_every_target_pixel_back_by_the_offset():
    tri = np.array([[8, 8], [40, 8], [8, 40]], float)
    handles, targets = polygon_pair_to_points(tri, tri + [16, 8])
    assert len(targets) > 10 and len(np.unique(targets, axis=0)) == len(targets)  # one pair per target pixel
    np.testing.assert_array_equal(targets - handles, np.tile([2, 1], (len(targets), 1)))  # latent grid: /8


def test_triangle_affine_scaling_is_backward_mapped():
    small = np.array([[8, 8], [24, 8], [8, 24]], float)
    big = np.array([[8, 8], [40, 8], [8, 40]], float)
    handles, targets = polygon_pair_to_points(small, big)
    # target pixel (x, y) on the latent grid maps to handle (1 + (x-1)/2, 1 + (y-1)/2), truncated
    expected = (1 + (targets - 1) / 2).astype(np.int32)
    np.testing.assert_array_equal(handles, expected)


def test_quadrilateral_uses_perspective_transform():
    square = np.array([[16, 16], [48, 16], [48, 48], [16, 48]], float)
    trapezoid = np.array([[16, 16], [48, 16], [56, 48], [8, 48]], float)
    handles, targets = polygon_pair_to_points(square, trapezoid)
    # all inside the handle square (2..6 on the latent grid), up to the reference's int32 truncation
    assert handles.min() >= 1 and handles.max() <= 6 and targets[:, 0].max() == 7
    # identity quadrilateral maps each pixel to itself
    h2, t2 = polygon_pair_to_points(square, square)
    np.testing.assert_array_equal(h2, t2)


def test_polygon_rejects_bad_vertex_counts():
    with pytest.raises(ValueError, match="3 or 4"):
        polygon_pair_to_points(np.zeros((5, 2)), np.zeros((5, 2)))


def test_brushed_masks_column_rescaling():
    src = np.zeros((64, 64), np.uint8)
    src[8:24, 8:24] = 1
    trg = np.zeros_like(src)
    trg[8:40, 32:64] = 1  # twice as large in both directions
    handles, targets = mask_pair_to_points(src, trg)
    assert len(targets) == 16  # 4×4 latent pixels
    assert handles[:, 0].min() == 1 and handles[:, 0].max() == 2
    assert handles[:, 1].min() == 1 and handles[:, 1].max() == 2
    # a pure translation maps with a constant offset
    moved = np.roll(src, 16, axis=1)
    h, t = mask_pair_to_points(src, moved)
    np.testing.assert_array_equal(t - h, np.tile([2, 0], (len(t), 1)))


def test_empty_brush_region_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        mask_pair_to_points(np.zeros((64, 64)), np.ones((64, 64)))


def test_dense_points_are_pixel_units_multiple_of_8():
    tri = np.array([[8, 8], [40, 8], [8, 40]], float)
    h, t = regions_to_dense_points([RegionPair("polygon", tri, tri + 16)])
    assert (h % 8 == 0).all() and (t % 8 == 0).all()


def test_subsample_is_seeded_keeps_at_least_one_and_order():
    h = np.arange(200, dtype=float).reshape(100, 2)
    t = h + 1
    a = subsample_pairs(h, t, 0.1, seed=3)
    b = subsample_pairs(h, t, 0.1, seed=3)
    c = subsample_pairs(h, t, 0.1, seed=4)
    assert len(a[0]) == 10 and np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert (np.diff(a[0][:, 0]) > 0).all() and np.array_equal(a[1], a[0] + 1)
    assert len(subsample_pairs(h, t, 0.001, seed=0)[0]) == 1
    with pytest.raises(ValueError):
        subsample_pairs(h, t, 0.0, seed=0)
