"""The resampling ops of the drag losses with a deterministic backward (harness/diffusion/deterministic_grad.py):
their forward is PyTorch's own op, their backward equals autograd's through it, and outside
`deterministic=true` on CUDA they are the plain ops. (The CUDA path itself is checked on the GPU by
benchmarks/check_determinism.py.)"""
import os

import pytest
import torch
import torch.nn.functional as F

from harness.diffusion import deterministic_grad as dg

SIZES = [((8, 12), (16, 24)), ((40, 23), (20, 46)), ((5, 7), (7, 5)), ((1, 3), (3, 1)), ((64, 64), (32, 32))]


@pytest.mark.parametrize("in_hw,out_hw", SIZES)
def test_resize_weights_reproduce_interpolate(in_hw, out_hw):
    x = torch.randn(2, 3, *in_hw)
    rows = dg.resize_weights(in_hw[0], out_hw[0], x.device)
    cols = dg.resize_weights(in_hw[1], out_hw[1], x.device)
    torch.testing.assert_close(rows @ x @ cols.t(), F.interpolate(x, out_hw, mode="bilinear"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("in_hw,out_hw", SIZES)
def test_resize_backward_equals_autograd(in_hw, out_hw):
    x = torch.randn(1, 4, *in_hw, requires_grad=True)
    upstream = torch.randn(1, 4, *out_hw)
    ours = dg._BilinearResize.apply(x, out_hw)
    assert torch.equal(ours, F.interpolate(x, out_hw, mode="bilinear"))  # the same forward kernel
    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), x)
    (grad_ref,) = torch.autograd.grad((F.interpolate(x, out_hw, mode="bilinear") * upstream).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-5, rtol=1e-5)


def points_grid(h: int, w: int) -> torch.Tensor:
    """Normalised (x, y) inside, on the last row/column, beyond every border (clamped) and on grid nodes."""
    torch.manual_seed(0)
    inside = torch.rand(30, 2) * 2 - 1
    edges = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -0.3], [0.2, 1.0], [1.4, 0.1], [-1.7, 2.0],
                          [2 * 3 / (w - 1) - 1, 2 * 2 / (h - 1) - 1]])
    return torch.cat([inside, edges]).reshape(1, 1, -1, 2)


@pytest.mark.parametrize("hw", [(9, 13), (2, 2), (32, 24)])
def test_grid_sample_backward_equals_autograd(hw):
    features = torch.randn(1, 5, *hw, requires_grad=True)
    grid = points_grid(*hw)
    upstream = torch.randn(1, 5, 1, grid.shape[2])
    plain = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
    ours = dg._GridSampleBorder.apply(features, grid)
    assert torch.equal(ours, plain)
    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), features)
    (grad_ref,) = torch.autograd.grad((plain * upstream).sum(), features)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-5, rtol=1e-5)


def test_plain_ops_outside_deterministic_cuda():
    """On the CPU (deterministic or not) the public functions take PyTorch's ops, so default runs are unchanged."""
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    grid = points_grid(6, 6)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        for mode in (False, True):
            torch.use_deterministic_algorithms(mode)
            assert not dg.needs_deterministic_backward(x)
            assert dg.bilinear_resize(x, (9, 4)).grad_fn.name() == "UpsampleBilinear2DBackward0"
            assert dg.grid_sample_border(x, grid).grad_fn.name() == "GridSampler2DBackward0"
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.mark.skipif(not torch.cuda.is_available() or not os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                    reason="needs a GPU, and CUBLAS_WORKSPACE_CONFIG=:4096:8 set before CUDA starts")
def test_cuda_path_under_deterministic_mode():
    """On a GPU with deterministic algorithms on: no error, our backward is taken, it equals PyTorch's
    atomic-add backward to float32 rounding and repeats bit for bit."""
    x = torch.randn(1, 8, 32, 48, device="cuda", requires_grad=True)
    grid = points_grid(64, 96).cuda()
    upstream_resize = torch.randn(1, 8, 64, 96, device="cuda")
    upstream_sample = torch.randn(1, 8, 1, grid.shape[2], device="cuda")

    def grads() -> tuple[torch.Tensor, torch.Tensor]:
        resized = dg.bilinear_resize(x, (64, 96))
        (g_resize,) = torch.autograd.grad((resized * upstream_resize).sum(), x)
        feats = resized.detach().requires_grad_(True)
        (g_sample,) = torch.autograd.grad((dg.grid_sample_border(feats, grid) * upstream_sample).sum(), feats)
        return g_resize, g_sample

    reference = grads()  # deterministic mode off: PyTorch's own kernels
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert dg.bilinear_resize(x, (64, 96)).grad_fn.name() != "UpsampleBilinear2DBackward0"
        first, second = grads(), grads()
    finally:
        torch.use_deterministic_algorithms(before)
    for ours, again, ref in zip(first, second, reference):
        assert torch.equal(ours, again)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
