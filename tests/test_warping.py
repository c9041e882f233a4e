"""Inpaint4Drag's bi_warp and FastDrag's warpage + BNNI (harness/diffusion/warping.py, latent_warp.py).

Parity: equal bit for bit to the released functions on the cases of tests/warp_cases.py — against the stored
release outputs (tests/fixtures/warp_release.npz) always, and against the fetched releases themselves when
EDITLAB_RELEASES names a directory holding Inpaint4Drag/ and FastDrag/ checkouts."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.diffusion import latent_warp, warping
from tests import warp_cases

FIXTURE = Path(__file__).parent / "fixtures" / "warp_release.npz"


def ours() -> dict[str, np.ndarray]:
    masks, out = warp_cases.region_masks(), {}
    for name, (mask_name, points) in warp_cases.BI_WARP_CASES.items():
        result = warping.bi_warp(masks[mask_name], np.array(points, dtype=float), 5)
        out.update({f"{name}/source": result.source, f"{name}/target": result.target, f"{name}/mask": result.inpaint_mask})
    for seed, n in warp_cases.FASTDRAG_CASES:
        latent, mask, handles, targets = warp_cases.fastdrag_case(seed, n)
        warped = latent_warp.warp_latent(latent, mask, handles / 4, targets / 4)
        out[f"fastdrag_{seed}_{n}/warp"] = warped.numpy()
        out[f"fastdrag_{seed}_{n}/bnni"] = latent_warp.bnni(warped.clone()).numpy()
    return out


def assert_same(reference: dict[str, np.ndarray], mine: dict[str, np.ndarray]) -> None:
    assert sorted(reference) == sorted(mine)
    for key in reference:
        assert reference[key].shape == mine[key].shape, key
        assert np.array_equal(reference[key], mine[key], equal_nan=True), (key, np.abs(reference[key] - mine[key]).max())


def test_equal_to_the_stored_release_outputs():
    with np.load(FIXTURE) as stored:
        assert_same(dict(stored), ours())


@pytest.mark.skipif(not os.environ.get("EDITLAB_RELEASES"), reason="EDITLAB_RELEASES (fetched releases) not set")
def test_equal_to_the_fetched_releases():
    assert_same(warp_cases.release_outputs(Path(os.environ["EDITLAB_RELEASES"])), ours())


def test_single_pair_translates_the_region_and_uncovers_the_rest():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 1
    result = warping.bi_warp(mask, np.array([[12, 12], [17, 14]], float), kernel_size=0)
    assert np.array_equal(result.target - result.source, np.tile([5, 2], (100, 1)))
    moved = np.zeros_like(mask)
    moved[12:22, 15:25] = 1
    uncovered = mask & (1 - moved)  # with k = 0: no band around the moved contour, no dilation
    assert np.array_equal(result.inpaint_mask, uncovered)
    image = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
    assert np.array_equal(warping.preview(image, result)[12:22, 15:25], image[10:20, 10:20])


def test_q1_single_reference_is_truncated_as_released_or_rounded():
    points, ref = torch.tensor([[3.0, 3.0]]), torch.tensor([[0.0, 0.0]])
    direction = torch.tensor([[0.6, -0.6]])
    assert torch.equal(warping.interpolate(points, ref, direction), torch.tensor([[3.6, 2.4]]))
    assert torch.equal(warping.interpolate(points, ref, direction, round_single=True), torch.tensor([[4.0, 2.0]]))


def test_even_kernel_becomes_odd():
    assert [warping.odd_kernel(k) for k in (-1, 0, 4, 5)] == [0, 0, 5, 5]


def test_warpage_moves_the_handle_cell_fully_and_bnni_fills_every_hole():
    latent = torch.arange(1, 1 + 4 * 12 * 12, dtype=torch.float32).reshape(1, 4, 12, 12)
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., 2:10, 2:10] = 1
    warped = latent_warp.warp_latent(latent, mask, torch.tensor([[5.5, 5.5]]), torch.tensor([[5.5, 7.5]]))
    assert torch.equal(warped[..., 5, 7], latent[..., 5, 5])  # next to the handle the drag is almost whole
    assert (warped[0, 0] == 0).any() and torch.equal(warped[..., 0, :], latent[..., 0, :])
    filled = latent_warp.bnni(warped.clone())
    assert not (filled[0, 0] == 0).any()


def test_q7_cell_on_the_handle_writes_nothing():
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 1:7, 1:7] = 1
    warped = latent_warp.warp_latent(latent, mask, torch.tensor([[3.0, 3.0]]), torch.tensor([[3.0, 5.0]]))
    assert not any(torch.equal(warped[0, :, r, c], latent[0, :, 3, 3]) for r in range(8) for c in range(8))


def test_empty_mask_is_a_clear_error():
    with pytest.raises(ValueError, match="mask is empty"):
        latent_warp.warp_latent(torch.randn(1, 4, 8, 8), torch.zeros(1, 1, 8, 8), torch.ones(1, 2), torch.ones(1, 2))
