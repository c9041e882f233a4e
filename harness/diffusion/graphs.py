"""CUDA-graph replay of fixed-shape UNet calls.

At batch size 1 an SD UNet call is bound by kernel-launch overhead (about a thousand small kernels), not
by arithmetic. Capturing the call once per input shape and replaying it removes that overhead without
changing a single kernel, so outputs are identical to eager execution (checked in benchmarks).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable

import torch

from harness.streams import role_stream

# Held while a graph is being captured. Some work must not run in another thread during a capture: freeing
# GPU memory back to the driver (a cudaFree ends the capture with an error) and loading new kernel modules
# (torch.compile's first call); a thread that does either while another one may be capturing takes this lock
# first (harness/concurrent_scoring.py, harness/metrics/dift.py).
CAPTURE_LOCK = threading.Lock()


class GraphCaptureError(RuntimeError):
    """A capture that could not be completed. The process's CUDA state cannot be trusted after it (measured on
    an H100: later edits silently changed), so the edit stage stops on it rather than recording a failed
    sample and going on; finished samples are kept, and a rerun resumes."""


def capture_graph(fn: Callable[[], Any], pool: Any = None) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Capture `fn()` (already warmed up, on the capture stream) as a CUDA graph; returns (graph, its output).
    `pool`: another graph's memory pool to share (a backward graph reads its forward graph's activations).

    Not `torch.cuda.graph(...)`: it starts with a device-wide synchronize, which would wait for a scorer
    working concurrently on its own stream (harness/concurrent_scoring.py); "thread_local" lets that thread
    go on allocating while this one captures. Its empty_cache is kept: a capture cannot return cached
    blocks to the driver when it runs short, and the scorer may hold tens of GB."""
    graph = torch.cuda.CUDAGraph()
    with CAPTURE_LOCK:
        torch.cuda.empty_cache()
        graph.capture_begin(pool=pool, capture_error_mode="thread_local")
        try:
            output = fn()  # the warm-up ran it: an error here is CUDA's
            graph.capture_end()
        except BaseException as exc:
            with contextlib.suppress(Exception):  # end the capture if it is still open
                graph.capture_end()
            if isinstance(exc, Exception):
                raise GraphCaptureError(f"CUDA graph capture failed: {exc}") from exc
            raise
    return graph, output


class GraphedCall:
    """`fn(*tensors) -> tensor` captured as a CUDA graph on static copies of `example` inputs.

    Calling copies the arguments into the static inputs and replays; the returned tensor is the static
    output, overwritten by the next call (clone it to keep it).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], example: tuple[torch.Tensor, ...], warmup: int = 1) -> None:
        self.static_inputs = tuple(t.clone() for t in example)
        stream = role_stream("graph_capture", self.static_inputs[0].device)  # never another thread's stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # lets cuDNN/cuBLAS pick algorithms and allocate workspaces first
                fn(*self.static_inputs)
            self.graph, self.static_output = capture_graph(lambda: fn(*self.static_inputs))
        torch.cuda.current_stream().wait_stream(stream)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        for static, value in zip(self.static_inputs, args):
            static.copy_(value)
        self.graph.replay()
        return self.static_output


class GraphedUNet:
    """Forward-only noise predictions `unet(x, t, encoder_hidden_states=context).sample`, each input shape
    captured once and replayed (`GraphedCall`): a batch-1 SD call is bound by kernel launches (27–37 ms
    eager against ~8 ms of GPU work on an H100), and the 50-step DDIM walks of the prompt editors make one
    per step. Same kernels, so the same output as the eager call.

    Runs the UNet eagerly instead on the CPU, when disabled, when gradients are on (null-text's Adam steps
    differentiate through the call), and while an attention controller is installed on it
    (`controlled_attention`): a replay would freeze the controller's per-call Python logic.

    A graph reads the weights at the addresses they had at capture: updating them in place is fine, replacing
    modules or parameters (a LoRA injected per sample, as the drag methods do) is not, which is why only the
    prompt editors, which never touch the UNet's weights, use this class; each editor keeps its own."""

    def __init__(self, unet, enabled: bool = True, max_shapes: int = 4) -> None:
        self.unet, self.enabled, self.max_shapes = unet, enabled, max_shapes
        self._graphs: dict[tuple, GraphedCall] = {}

    def __call__(self, x: torch.Tensor, t: int | torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if not self.replays(x):
            return self.unet(x, t, encoder_hidden_states=context).sample
        t = torch.as_tensor(t, device=x.device)
        key = (tuple(x.shape), x.dtype, tuple(context.shape), context.dtype, t.dtype)
        graphed = self._graphs.get(key)
        if graphed is None:
            if len(self._graphs) >= self.max_shapes:
                self._graphs.pop(next(iter(self._graphs)))  # its memory goes back with the next capture's empty_cache
            graphed = self._graphs[key] = GraphedCall(self._eps, (x, t, context))
        return graphed(x, t, context).clone()  # the static output is overwritten by the next replay

    def replays(self, x: torch.Tensor) -> bool:
        """Whether a call on `x` now is replayed (see the class docstring for when it is not)."""
        from harness.diffusion.attention_control import is_controlled

        return self.enabled and x.device.type == "cuda" and not torch.is_grad_enabled() and not is_controlled(self.unet)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=context).sample
