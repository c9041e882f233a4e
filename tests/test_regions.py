"""Region pairs → dense point pairs (RegionDrag's mappings) and point subsampling."""
from __future__ import annotations

import numpy as np
import pytest

from harness.regions import (mask_pair_to_points, polygon_pair_to_points, region_to_points, regions_to_dense_points,
                             subsample_pairs)
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


# --- drawn region + sparse points (RegionDrag `region_to_points`) -----------------------------------

def _box(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_region_with_one_handle_translates_every_pixel():
    mask = _box(128, 128, 16, 16, 48, 48)  # latent 2..5 × 2..5
    handles, targets = region_to_points(mask, [[24, 24]], [[40, 32]])  # latent (3, 3) → (5, 4)
    assert len(targets) == 16
    np.testing.assert_array_equal(targets - handles, np.tile([2, 1], (16, 1)))
    assert {tuple(p) for p in handles} == {(x, y) for x in range(2, 6) for y in range(2, 6)}


def test_region_with_several_equal_handles_uses_idw_and_still_translates():
    mask = _box(128, 128, 16, 16, 64, 64)
    handles, targets = region_to_points(mask, [[24, 24], [56, 24], [40, 56]], [[40, 24], [72, 24], [56, 56]])
    assert len(targets) == 36
    np.testing.assert_array_equal(targets - handles, np.tile([2, 0], (36, 1)))


def test_region_without_a_handle_inside_gives_no_pairs():
    mask = _box(128, 128, 16, 16, 48, 48)
    handles, targets = region_to_points(mask, [[100, 100]], [[110, 100]])
    assert handles.shape == (0, 2) and targets.shape == (0, 2)


def test_each_region_follows_its_own_handles_and_pairs_stay_on_the_grid():
    mask = _box(128, 128, 8, 8, 40, 40) | _box(128, 128, 80, 80, 112, 112)
    handles, targets = region_to_points(mask, [[16, 16], [88, 88]], [[32, 16], [88, 120]])
    first = handles[:, 0] < 8
    np.testing.assert_array_equal(targets[first] - handles[first], np.tile([2, 0], (first.sum(), 1)))
    np.testing.assert_array_equal(targets[~first] - handles[~first], np.tile([0, 4], ((~first).sum(), 1)))
    assert first.sum() == 16 and (~first).sum() < 16  # the second region is pushed past the bottom edge
    assert targets.max() < 16 and handles.min() >= 0


def test_idw_matches_a_plain_per_point_implementation():
    import torch

    from harness.regions import _idw_move

    rng = np.random.default_rng(0)
    points = rng.integers(0, 64, (50, 2)).astype(np.int32)
    refs = rng.integers(0, 64, (130, 2)).astype(np.int32)  # > 100: evenly spaced subsample
    moves = rng.integers(-6, 7, (130, 2)).astype(np.int32)
    got = _idw_move(points, refs, moves, torch.float64)
    index = torch.linspace(0, 129, steps=100).long().numpy()
    refs, moves = refs[index], moves[index]
    for p, g in zip(points, got):
        d = np.linalg.norm(refs - p, axis=1)
        near = np.argsort(d, kind="stable")[:4]
        w = 1 / (d[near] + 1e-4)
        expected = np.round(p + (w[:, None] * moves[near]).sum(0) / w.sum()).astype(np.int32)
        np.testing.assert_array_equal(g, expected)


def test_region_and_points_to_dense_is_in_pixels():
    from harness.regions import region_and_points_to_dense

    h, t = region_and_points_to_dense(_box(128, 128, 16, 16, 48, 48), np.array([[24, 24]]), np.array([[40, 32]]))
    assert h.dtype == np.float64 and (h % 8 == 0).all()
    np.testing.assert_array_equal(t - h, np.tile([16, 8], (16, 1)))
