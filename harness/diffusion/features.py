"""UNet feature capture (and replacement) by block, through forward hooks.

The released drag pipelines patch `unet.forward` to return every up-block output; a forward hook on the one
block a method supervises gives the same tensor without copying diffusers' forward. Blocks are named by
their module path: `up_blocks.2` is DragDiffusion's `unet_feature_idx=3` (640 channels on the latent grid
of SD 1.5), `mid_block` is its index 0 and DragNoise's bottleneck. A tap can also *replace* its block's
output, which is how DragNoise injects the optimised bottleneck.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from harness.diffusion.deterministic_grad import bilinear_resize


class BlockTap:
    """Forward hook on one UNet block: records its latest output; returns `replacement` instead if set.

    Use as a context manager so the hook never outlives the edit that needed it.
    """

    def __init__(self, unet, block: str) -> None:
        try:
            self.module = unet.get_submodule(block)
        except AttributeError:
            raise ValueError(f"UNet has no block {block!r} (try 'mid_block' or 'up_blocks.0'..'up_blocks.3')") from None
        self.block = block
        self.output: torch.Tensor | None = None
        self.replacement: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module, inputs, output):
        self.output = output
        if self.replacement is not None:
            return self.replacement.to(output.dtype).expand_as(output)
        return None

    def __enter__(self) -> "BlockTap":
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self.output = self.replacement = None


def resize_features(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False, as `F.interpolate` defaults) in float32 to the supervision grid
    (with a deterministic backward under `deterministic=true`: harness/diffusion/deterministic_grad.py)."""
    return bilinear_resize(features.float(), size)


def supervision_size(image_hw: tuple[int, int], scale: float = 0.5) -> tuple[int, int]:
    """The feature grid the drag losses run on: `int(0.5 · H), int(0.5 · W)` of the source image."""
    return int(scale * image_hw[0]), int(scale * image_hw[1])


class _SkippedUpBlock(nn.Module):
    """Stands in for an up block after the one a featuriser wants: hands its input on unchanged. It keeps
    the original's number of `resnets` (a plain list, no parameters) because `UNet2DConditionModel.forward`
    pops that many skip connections per up block."""

    has_cross_attention = False

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.resnets = [None] * len(block.resnets)

    def forward(self, hidden_states: torch.Tensor, **_) -> torch.Tensor:
        return hidden_states


def unet_through_up_block(unet: nn.Module, index: int) -> nn.Module:
    """A view of `unet`, sharing its weights, whose forward returns the output of `up_blocks[index]` (its
    upsampler included) and skips everything after it.

    Why not a hook that stops the forward: the view is one plain module call (no exception for control
    flow), so `torch.compile` can take it whole, and diffusers' own forward still runs every op up to the
    block in the same order, so the feature is bit-identical to the full UNet's `up_blocks[index]` output
    (tests/test_md.py). The later up blocks become pass-throughs and the output head an identity."""
    if not 0 <= index < len(unet.up_blocks):
        raise ValueError(f"up block index {index} out of range: the UNet has {len(unet.up_blocks)} up blocks")
    up_blocks = nn.ModuleList([*unet.up_blocks[:index + 1],
                               *(_SkippedUpBlock(block) for block in unet.up_blocks[index + 1:])])
    # conv_norm_out=None: UNet2DConditionModel then skips its output norm and activation
    return module_view(unet, up_blocks=up_blocks, conv_norm_out=None, conv_out=nn.Identity())


def module_view(module: nn.Module, **children: nn.Module | None) -> nn.Module:
    """A shallow copy of `module` with the named children replaced: the same parameters and forward code,
    while `module` itself (which other users of a cached model share) stays as it was."""
    view = copy.copy(module)
    view._modules = dict(module._modules)  # own module table, so the assignments below miss `module`
    for name, child in children.items():
        setattr(view, name, child)
    return view
