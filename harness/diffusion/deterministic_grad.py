"""Bilinear resampling with a deterministic CUDA backward pass, for runs with `deterministic=true`.

PyTorch has no deterministic CUDA backward for `F.grid_sample` or for bilinear `F.interpolate`: both scatter
gradients with atomic adds, so under `torch.use_deterministic_algorithms(True)` they raise, and every edit of
the DragDiffusion family stopped at its first motion-supervision step (measured on an H100,
benchmarks/NOTES.md, session 8). The functions here run the very same forward kernels (values bit-identical)
and, only when deterministic algorithms are on and the input is a CUDA tensor that needs a gradient, compute
the backward another way: the separable resize as two matrix products, the sampler's scatter as `index_add_`
(deterministic under the mode). Otherwise they are the plain PyTorch calls, so default runs are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def needs_deterministic_backward(x: torch.Tensor) -> bool:
    """Whether `x`'s resampling backward must avoid PyTorch's atomic-add CUDA kernels."""
    return x.requires_grad and x.is_cuda and torch.are_deterministic_algorithms_enabled()


def resize_weights(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """(out, in) matrix of `F.interpolate(mode="bilinear", align_corners=False)` along one axis, computed as
    PyTorch's kernel does in float32: source = (dst + 0.5)·in/out − 0.5, clamped at 0; the upper neighbour
    is clamped at the last index."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    dst = torch.arange(out_size, dtype=torch.float32)
    src = ((dst + 0.5) * scale - 0.5).clamp(min=0)
    low = src.floor().long().clamp(max=in_size - 1)
    lam = src - low.float()
    high = (low + 1).clamp(max=in_size - 1)
    weights = torch.zeros(out_size, in_size, dtype=torch.float32)
    rows = torch.arange(out_size)
    weights.index_put_((rows, low), 1 - lam, accumulate=True)
    weights.index_put_((rows, high), lam, accumulate=True)
    return weights.to(device)


class _BilinearResize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        ctx.in_hw = tuple(x.shape[-2:])
        return F.interpolate(x, size, mode="bilinear")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (h, w), (oh, ow) = ctx.in_hw, tuple(grad.shape[-2:])
        rows = resize_weights(h, oh, grad.device).to(grad.dtype)  # (oh, h)
        cols = resize_weights(w, ow, grad.device).to(grad.dtype)  # (ow, w)
        return rows.t() @ grad @ cols, None


def bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(x, size, mode="bilinear")` (align_corners=False) with a deterministic CUDA backward
    under `deterministic=true`."""
    if needs_deterministic_backward(x):
        return _BilinearResize.apply(x, tuple(size))
    return F.interpolate(x, size, mode="bilinear")


def _corners(grid: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (4, P) and weights (4, P) of the four neighbours of each normalised (x, y) in `grid`
    (align_corners=True, border padding: coordinates clamped to the map), as `grid_sample`'s kernel takes
    them; weights of neighbours outside the map are 0 (their index is clamped, harmlessly)."""
    h, w = hw
    g = grid.reshape(-1, 2)
    x = ((g[:, 0] + 1) / 2 * (w - 1)).clamp(0, w - 1)
    y = ((g[:, 1] + 1) / 2 * (h - 1)).clamp(0, h - 1)
    x0, y0 = x.floor(), y.floor()
    x1, y1 = x0 + 1, y0 + 1
    indices, weights = [], []
    for cx, cy, wt in ((x0, y0, (x1 - x) * (y1 - y)), (x1, y0, (x - x0) * (y1 - y)),
                       (x0, y1, (x1 - x) * (y - y0)), (x1, y1, (x - x0) * (y - y0))):
        inside = (cx <= w - 1) & (cy <= h - 1)
        indices.append((cy.clamp(max=h - 1) * w + cx.clamp(max=w - 1)).long())
        weights.append(torch.where(inside, wt, torch.zeros_like(wt)))
    return torch.stack(indices), torch.stack(weights)


class _GridSampleBorder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grid)
        ctx.shape = features.shape
        return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (grid,), (n, c, h, w) = ctx.saved_tensors, ctx.shape
        if n != 1:
            raise NotImplementedError("deterministic grid_sample backward: one feature map at a time")
        indices, weights = _corners(grid, (h, w))
        values = grad.reshape(c, 1, -1) * weights.to(grad.dtype)  # (C, 4, P)
        out = grad.new_zeros(c, h * w).index_add_(1, indices.reshape(-1), values.reshape(c, -1))
        return out.reshape(1, c, h, w), None


def grid_sample_border(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`F.grid_sample(features, grid, bilinear, border, align_corners=True)` with a deterministic CUDA
    backward for `features` under `deterministic=true` (the grid takes no gradient there)."""
    if needs_deterministic_backward(features):
        if grid.requires_grad:
            raise NotImplementedError("deterministic grid_sample backward: no gradient for the grid")
        return _GridSampleBorder.apply(features, grid)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
