"""CUDA-graph replay of fixed-shape UNet calls.

At batch size 1 an SD UNet call is bound by kernel-launch overhead (about a thousand small kernels), not
by arithmetic. Capturing the call once per input shape and replaying it removes that overhead without
changing a single kernel, so outputs are identical to eager execution (checked in benchmarks).
"""
from __future__ import annotations

from typing import Callable

import torch


class GraphedCall:
    """`fn(*tensors) -> tensor` captured as a CUDA graph on static copies of `example` inputs.

    Calling copies the arguments into the static inputs and replays; the returned tensor is the static
    output, overwritten by the next call (clone it to keep it).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], example: tuple[torch.Tensor, ...], warmup: int = 1) -> None:
        self.static_inputs = tuple(t.clone() for t in example)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # lets cuDNN/cuBLAS pick algorithms and allocate workspaces first
                fn(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = fn(*self.static_inputs)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        for static, value in zip(self.static_inputs, args):
            static.copy_(value)
        self.graph.replay()
        return self.static_output
