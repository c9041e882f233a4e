"""One CUDA stream per role (graph capture, the scorer, the edits), distinct from each other's.

Why: `torch.cuda.Stream()` does not create a stream; it hands out the next of a fixed pool (32 per priority
level), round-robin. Taking a fresh one for every graph capture cycles the pool, and after a few dozen
captures the capture stream *is* the stream the concurrent scorer works on: its copies and kernels then land
in the edit's graph or break the capture (measured on an H100: "Cannot copy between CPU and CUDA tensors
during CUDA graph capture" in the scorer, an invalidated capture, and edits that silently changed). Each
role therefore takes its stream once per process and device, and never one another role holds.
"""
from __future__ import annotations

import threading

import torch

_STREAMS: dict[tuple[str, int], torch.cuda.Stream] = {}
_LOCK = threading.Lock()


def role_stream(role: str, device: torch.device | str, priority: int = 0) -> torch.cuda.Stream:
    """The process's stream for `role` on `device` (created at `priority` on first use)."""
    device = torch.device(device)
    index = torch.cuda.current_device() if device.index is None else device.index
    with _LOCK:
        stream = _STREAMS.get((role, index))
        if stream is None:
            taken = {s.stream_id for (_, i), s in _STREAMS.items() if i == index}
            for _ in range(64 + 1):  # two passes over a 32-stream pool always find a free one
                stream = torch.cuda.Stream(index, priority=priority)
                if stream.stream_id not in taken:
                    break
            else:
                raise RuntimeError(f"no CUDA stream left for role {role!r} on device {index}")
            _STREAMS[(role, index)] = stream
        return stream


def highest_priority() -> int:
    """CUDA's highest stream priority (lower numbers are higher priorities)."""
    return min(torch.cuda.Stream.priority_range())
