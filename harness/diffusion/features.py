"""UNet feature capture (and replacement) by block, through forward hooks.

The released drag pipelines patch `unet.forward` to return every up-block output; a forward hook on the one
block a method supervises gives the same tensor without copying diffusers' forward. Blocks are named by
their module path: `up_blocks.2` is DragDiffusion's `unet_feature_idx=3` (640 channels on the latent grid
of SD 1.5), `mid_block` is its index 0 and DragNoise's bottleneck. A tap can also *replace* its block's
output, which is how DragNoise injects the optimised bottleneck.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
    """Bilinear resize (align_corners=False, as `F.interpolate` defaults) in float32 to the supervision grid."""
    return F.interpolate(features.float(), size, mode="bilinear")


def supervision_size(image_hw: tuple[int, int], scale: float = 0.5) -> tuple[int, int]:
    """The feature grid the drag losses run on: `int(0.5 · H), int(0.5 · W)` of the source image."""
    return int(scale * image_hw[0]), int(scale * image_hw[1])
