"""MagicBrush (Zhang et al., NeurIPS'23 Datasets & Benchmarks): InstructPix2Pix fine-tuned on the MagicBrush
training set. Same loop, inputs and defaults as `instruct_pix2pix` (MagicBrush's
`edit_cli_single_multi_turn.py` keeps InstructPix2Pix's 100 steps, cfg-text 7.5, cfg-image 1.5, 512 and
Euler-ancestral sampling); only the weights differ (model `magicbrush`: vinesmsuic/magicbrush-jul7). Single-
turn editing: each sample is edited once from its source image.
"""
from __future__ import annotations

from harness.registry import METHODS
from methods.instruct_pix2pix import InstructPix2Pix


@METHODS.register("magicbrush")
class MagicBrush(InstructPix2Pix):
    name = "magicbrush"
