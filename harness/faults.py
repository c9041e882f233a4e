"""How a failing sample is described in its record, and cleanup after an out-of-memory error.

The edit stage records every exception of a sample and goes on (design.md, "Conventions"), except a fatal
one (`is_fatal`: a failed CUDA graph capture), which is recorded and then stops the stage. Two kinds get
special treatment: a CUDA out-of-memory error is recorded with type `OOM` and the memory the failed
sample held is returned to the allocator before the next sample starts, and a non-finite value carries the
stage and step where it appeared.
"""
from __future__ import annotations

import gc
import traceback
from typing import Any

from harness.diffusion.numerics import NonFiniteError


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def is_fatal(exc: BaseException) -> bool:
    """Errors after which the process must not edit further samples (harness/diffusion/graphs.py)."""
    from harness.diffusion.graphs import GraphCaptureError

    return isinstance(exc, GraphCaptureError)


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The `error` field of a failed record: a type to group by, the message, and where it happened."""
    error: dict[str, Any] = {"type": "OOM" if is_out_of_memory(exc) else type(exc).__name__,
                             "exception": f"{type(exc).__module__}.{type(exc).__qualname__}",
                             "message": str(exc), "traceback": traceback.format_exc(limit=20)}
    if isinstance(exc, NonFiniteError):
        error.update(where=exc.where, step=exc.step, timestep=exc.timestep)
    return error


def release_memory() -> dict[str, Any]:
    """Free what a failed sample left behind: unreachable tensors (gc) and the CUDA allocator's cache.

    Call it after leaving the `except` block: until then the exception's traceback keeps the failed
    sample's frames, and with them its tensors, alive.
    """
    import torch

    gc.collect()
    released: dict[str, Any] = {"gc": True, "cuda_empty_cache": False}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        released.update(cuda_empty_cache=True, cuda_allocated_mib=torch.cuda.memory_allocated() / 2 ** 20)
    return released
