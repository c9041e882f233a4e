"""`cuda_graphs` of the gradient-based drag methods changes outputs on the GPU (benchmarks/NOTES.md: DragDiffusion's
graphed LoRA fit differs from the eager one by 7e-4), so `true` must key its own run folder while the default
(eager) keeps the keys of earlier runs. Forward-only graphs stay runtime settings: RegionDrag's graphed edit equals
its eager one on the H100 (max |Δ| 0, benchmarks/results/regiondrag-ip_adapter_plus-*.json); Inpaint4Drag replays
the same kind of forward-only UNet graph (its GPU graphed-vs-eager output comparison is not yet made)."""
from __future__ import annotations

import pytest

import methods  # noqa: F401  (registers the methods)
from harness.registry import METHODS

GRADIENT = ["dragdiffusion", "dragnoise", "freedrag", "gooddrag", "sdedrag"]


@pytest.mark.parametrize("name", GRADIENT)
def test_graphs_on_keys_a_new_folder_and_the_default_keeps_the_old_key(name):
    cls = METHODS.get(name)
    default = cls.build({}).describe()
    off = cls.build({"cuda_graphs": False}).describe()
    on = cls.build({"cuda_graphs": True}).describe()
    assert "cuda_graphs" not in default["config"] and off == default
    assert on["config"]["cuda_graphs"] is True and on != default


@pytest.mark.parametrize("name", ["regiondrag", "inpaint4drag"])
def test_forward_only_graphs_stay_out_of_the_key(name):
    cls = METHODS.get(name)
    assert cls.build({"cuda_graphs": False}).describe() == cls.build({"cuda_graphs": True}).describe()
