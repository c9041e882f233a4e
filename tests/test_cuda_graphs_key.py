"""Which `cuda_graphs` settings enter the store key.

The five gradient-based drag methods measured on an H100 (benchmarks/NOTES.md, session 8) default to graphs and
keep them out of the key: a graphed edit differs from an eager one no more than two eager GPU runs differ from
each other (the atomic-add backward kernels), so neither path has outputs the other could be told apart from.
Under `deterministic=true` the graphs are switched off whatever the config says (the eager path is the one
verified bit-reproducible on the GPU). DragLoRA's graphs are unmeasured: off by default, and `true` keys its own
folder. Forward-only graphs (RegionDrag, Inpaint4Drag) are runtime settings too."""
from __future__ import annotations

import pytest
import torch

import methods  # noqa: F401  (registers the methods)
from harness.diffusion.graphed_grad import graphs_enabled, training_graphs
from harness.registry import METHODS

GRADIENT = ["dragdiffusion", "dragnoise", "freedrag", "gooddrag", "sdedrag"]


@pytest.mark.parametrize("name", GRADIENT)
def test_graphs_default_on_and_out_of_the_key(name):
    cls = METHODS.get(name)
    assert cls.build({}).config.cuda_graphs is True
    assert cls.build({"cuda_graphs": False}).describe() == cls.build({}).describe()
    assert "cuda_graphs" not in cls.build({}).describe()["config"]


def test_draglora_graphs_opt_in_and_keyed():
    cls = METHODS.get("draglora")
    default = cls.build({}).describe()
    assert cls.build({}).config.cuda_graphs is False and "cuda_graphs" not in default["config"]
    on = cls.build({"cuda_graphs": True}).describe()
    assert on["config"]["cuda_graphs"] is True and on != default


@pytest.mark.parametrize("name", ["regiondrag", "inpaint4drag"])
def test_forward_only_graphs_stay_out_of_the_key(name):
    cls = METHODS.get(name)
    assert cls.build({"cuda_graphs": False}).describe() == cls.build({"cuda_graphs": True}).describe()


def test_deterministic_runs_never_graph():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        with training_graphs(True):
            assert graphs_enabled()
        torch.use_deterministic_algorithms(True)
        with training_graphs(True):
            assert not graphs_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
