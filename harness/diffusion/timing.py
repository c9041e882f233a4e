"""Stage timings that mean something on a GPU: the work queued so far is waited for at both ends of a stage.

"The work" is the current stream's, not the whole device's: when the score stage runs concurrently on a
stream of its own (harness/concurrent_scoring.py), a device-wide synchronize would make every edit wait for
the scorer's queued work. Every method's kernels go through the current stream (side streams, such as
graph capture's, join it), so on its own the two are the same."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device`'s current stream (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


@contextlib.contextmanager
def device_timer(device: torch.device | str | None, peak_memory: bool = True) -> Iterator[dict[str, float]]:
    """The one device-synchronised timer of the project (edits, method stages, benchmarks): wall clock of the
    block with its queued GPU work finished (`synchronize` at both ends) and, with `peak_memory`, the peak
    memory allocated on the device meanwhile (its counter is reset at the start, so a timer nested inside
    another passes False). Yields a dict whose `seconds` and `peak_mib` (MiB, 0 off the GPU) are filled when
    the block ends. `device` None or a CPU device: the plain wall clock."""
    device = torch.device(device) if isinstance(device, str) else device
    cuda = device is not None and device.type == "cuda"
    peak_memory = peak_memory and cuda
    out = {"seconds": 0.0, "peak_mib": 0.0}
    if cuda:
        synchronize(device)
    if peak_memory:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        yield out
    finally:
        if cuda:
            synchronize(device)
        if peak_memory:
            out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["seconds"] = time.perf_counter() - start


class Stopwatch:
    """Adds each named stage's device-synchronised seconds to `timings` (inside an edit, whose own timer
    measures the peak memory)."""

    def __init__(self, device: torch.device, timings: dict[str, float]) -> None:
        self.device, self.timings = device, timings

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        timer = {"seconds": 0.0}
        try:
            with device_timer(self.device, peak_memory=False) as timer:
                yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + timer["seconds"]
