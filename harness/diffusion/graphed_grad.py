"""CUDA-graph replay of fixed-shape UNet calls *with their backward pass*: the LoRA fit's and the drag loops'.

The optimisation-based drag methods spend their time in batch-1 (drag) or batch-4 (LoRA) UNet forward and
backward passes whose kernels are far smaller than their launch cost on an H100 host. `GradGraphs` captures
the forward of `fn(*inputs)` and its backward (`torch.autograd.grad` towards the inputs that require a
gradient and the given parameters) as two CUDA graphs sharing one memory pool, once per input shape, and
replays them inside an ordinary autograd node: the caller's loss, gradient scaler and optimiser stay eager
and unchanged, so the update is the same arithmetic on the same kernels (bit-identical outputs where the
eager kernels are; the benchmark measures it).

Why not `torch.cuda.make_graphed_callables`: it captures with a device-wide synchronize and the global
capture mode, which a scorer allocating concurrently in another thread breaks (harness/graphs.py,
`capture_graph`, uses the capture lock and thread-local mode instead), and it only finds parameters of
module callables.

On by default for the five measured methods (`cuda_graphs=true`; DragLoRA's stays off, unmeasured). On an
H100 the edits are 1.3–3.0× faster (benchmarks/NOTES.md, session 8). They are not bit-identical to the eager
path, but neither is the eager path to itself: without `deterministic=true` the GPU's atomic-add backward
kernels make two eager runs differ, and a graphed run differs from an eager one exactly as much (few-step
edits: max |Δ| 18 vs 20 levels for DragDiffusion, 10 vs 8 for DragNoise; LoRA weights 7e-4 vs 8e-4), a
twentieth of what another seed changes. So the setting is a runtime field (not in the store key). Under
`deterministic=true` graphs are not used (`training_graphs` leaves them off): those runs are eager, the path
verified bit-reproducible across processes on the GPU.

A graph reads the weights at their capture addresses: a `GradGraphs` lives for one LoRA fit or one drag
(the per-sample LoRA is new parameters each edit) and is dropped with it. Graphs are skipped (the plain
eager call runs) on the CPU, with gradients off, when no input requires a gradient, or when disabled
(`cuda_graphs=false`, or `deterministic=true`).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Sequence

import torch

from harness.diffusion.graphs import capture_graph
from harness.streams import role_stream

Tensors = tuple[torch.Tensor, ...]
_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("editlab_training_graphs", default=False)


@contextlib.contextmanager
def training_graphs(enabled: bool) -> Iterator[None]:
    """Turn CUDA graphs for gradient passes on or off for the block (the methods' `cuda_graphs` setting); off
    whatever `enabled` says while deterministic algorithms are on (see the module docstring)."""
    token = _ENABLED.set(bool(enabled) and not torch.are_deterministic_algorithms_enabled())
    try:
        yield
    finally:
        _ENABLED.reset(token)


def graphs_enabled(device: torch.device | None = None) -> bool:
    """Whether gradient passes replay from graphs here: the block's setting and, given a `device`, a CUDA one
    (graphs never run on the CPU)."""
    return _ENABLED.get() and (device is None or torch.device(device).type == "cuda")


def _as_tuple(out: torch.Tensor | Sequence[torch.Tensor]) -> Tensors:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


class _GradGraph:
    """One input signature's forward and backward graphs."""

    def __init__(self, fn: Callable[..., Any], example: Tensors, params: Sequence[torch.nn.Parameter]) -> None:
        self.static_inputs = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in example)
        self.params = tuple(params)
        wrt = [t for t in self.static_inputs if t.requires_grad] + list(self.params)
        stream = role_stream("graph_capture", self.static_inputs[0].device)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            warm = _as_tuple(fn(*self.static_inputs))  # lets cuDNN/cuBLAS pick algorithms first, both ways
            needs = [o for o in warm if o.requires_grad]
            torch.autograd.grad(needs, wrt, [torch.zeros_like(o) for o in needs], allow_unused=True)
            del warm, needs
            self.forward, outputs = capture_graph(lambda: _as_tuple(fn(*self.static_inputs)))
            self.static_outputs = outputs
            self.grad_outputs = tuple(torch.zeros_like(o) if o.requires_grad else None for o in outputs)
            differentiable = [o for o in outputs if o.requires_grad]
            grads_for = [g for g in self.grad_outputs if g is not None]
            self.backward, grads = capture_graph(
                lambda: torch.autograd.grad(differentiable, wrt, grads_for, allow_unused=True),
                pool=self.forward.pool())
        torch.cuda.current_stream().wait_stream(stream)
        self.static_grads = grads  # in `wrt` order: differentiable inputs, then the parameters


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, graph: _GradGraph, *args: torch.Tensor) -> Tensors:  # type: ignore[override]
        ctx.graph = graph
        for static, value in zip(graph.static_inputs, args):
            static.copy_(value)
        graph.forward.replay()
        # clones: the static outputs are overwritten by the next replay, a caller may still hold these
        return tuple(o.detach().clone() for o in graph.static_outputs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        graph: _GradGraph = ctx.graph
        for static, grad in zip(graph.grad_outputs, grads):
            if static is not None:
                static.copy_(grad) if grad is not None else static.zero_()
        graph.backward.replay()
        computed = iter(g.clone() if g is not None else None for g in graph.static_grads)
        inputs = tuple(next(computed) if t.requires_grad else None for t in graph.static_inputs)
        return (None, *inputs, *computed)


class GradGraphs:
    """`fn(*inputs) -> tensor(s)` with forward and backward replayed from CUDA graphs, one per input
    signature (shapes, dtypes, which inputs require a gradient). `params`: the parameters the backward
    must produce gradients for (the LoRA weights being fitted; none for a drag, whose UNet is frozen).

    `fn` must be graph-safe: no host synchronisation, no randomness, no data-dependent Python control flow
    (a UNet call at a tensor timestep is; a Python-int timestep is copied from the host and is not)."""

    def __init__(self, fn: Callable[..., Any], params: Sequence[torch.nn.Parameter] = (), enabled: bool | None = None,
                 max_shapes: int = 2) -> None:
        self.fn, self.params, self.max_shapes = fn, tuple(p for p in params if p.requires_grad), max_shapes
        self.enabled = graphs_enabled() if enabled is None else enabled
        self._graphs: dict[tuple, _GradGraph] = {}

    def replays(self, inputs: Tensors) -> bool:
        return (self.enabled and inputs[0].device.type == "cuda" and torch.is_grad_enabled()
                and (any(t.requires_grad for t in inputs) or bool(self.params)))

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if not self.replays(inputs):
            return self.fn(*inputs)
        key = tuple((tuple(t.shape), t.dtype, t.requires_grad) for t in inputs)
        graph = self._graphs.get(key)
        if graph is None:
            if len(self._graphs) >= self.max_shapes:
                self._graphs.pop(next(iter(self._graphs)))
            graph = self._graphs[key] = _GradGraph(self.fn, inputs, self.params)
        out = _Replay.apply(graph, *inputs, *self.params)
        return out[0] if len(out) == 1 else out
