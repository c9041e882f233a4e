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


class Stopwatch:
    """Adds each named stage's device-synchronised seconds to `timings`."""

    def __init__(self, device: torch.device, timings: dict[str, float]) -> None:
        self.device, self.timings = device, timings

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


@contextlib.contextmanager
def device_timer(device: torch.device | str | None) -> Iterator[dict[str, float]]:
    """Wall clock of the block with its queued GPU work finished (`synchronize` at both ends), and the peak
    memory allocated on the device meanwhile: yields a dict whose `seconds` and `peak_mib` (MiB, 0 off the
    GPU) are filled when the block ends. `device` None or a CPU device: the plain wall clock."""
    device = torch.device(device) if isinstance(device, str) else device
    cuda = device is not None and device.type == "cuda"
    out = {"seconds": 0.0, "peak_mib": 0.0}
    if cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        yield out
    finally:
        if cuda:
            synchronize(device)
            out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["seconds"] = time.perf_counter() - start
