"""Host work that overlaps the GPU: reading the next sample while this one is edited or scored, and writing
finished outputs while the next one runs.

Why: a RegionDrag edit takes ~0.2 s on an H100, and decoding a sample, PNG-encoding the result, hashing it
and two fsync'ed atomic writes take about as long again. Done in line they nearly double a run; done on
worker threads they hide behind the next edit (PIL, zlib, hashlib, file I/O and CUDA synchronisation all
release the GIL). Everything stays ordered and nothing is lost: `Prefetcher` returns exactly what a direct
call would (its exceptions included, raised where the value is used), and `BackgroundWriter` finishes
every submitted write before its `with` block exits, on errors and Ctrl-C too, and re-raises a failed
write in the main thread.
"""
from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Hashable, Iterable, Iterator, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class BackgroundWriter:
    """Runs write jobs in submission order on one thread; at most `max_pending` wait at once (bounded
    memory: each holds a finished image), the submitter blocks beyond that."""

    def __init__(self, max_pending: int = 2, name: str = "harness-writer") -> None:
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: collections.deque[Future] = collections.deque()

    def submit(self, job: Callable[[], object]) -> None:
        """Queue `job`; re-raises the error of an earlier job that failed."""
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        self._reap()
        self._pending.append(self._executor.submit(job))

    def _reap(self) -> None:
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()

    def flush(self) -> None:
        """Wait for every queued job; raises the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.flush()
            else:  # finish what was handed over, but let the original error propagate
                for future in self._pending:
                    future.exception()
                self._pending.clear()
        finally:
            self._executor.shutdown(wait=True)


class Prefetcher(Generic[K, T]):
    """`get(key)` returns `load(key)`, having started loading the key that follows it in `order` in the
    background. Keys asked for out of order are loaded directly (a skipped prefetch is dropped)."""

    def __init__(self, load: Callable[[K], T], order: Iterable[K], name: str = "harness-prefetch") -> None:
        self._load = load
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._order = list(order)
        self._position = {key: i for i, key in enumerate(self._order)}
        self._ahead: tuple[K, Future] | None = None

    def get(self, key: K) -> T:
        ahead, self._ahead = self._ahead, None
        future = ahead[1] if ahead is not None and ahead[0] == key else None
        i = self._position.get(key)
        if i is not None and i + 1 < len(self._order):
            following = self._order[i + 1]
            self._ahead = (following, self._executor.submit(self._load, following))
        return future.result() if future is not None else self._load(key)

    def close(self) -> None:
        self._ahead = None
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Prefetcher[K, T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_prefetched(load: Callable[[K], T], keys: Iterable[K]) -> Iterator[tuple[K, T]]:
    """(key, load(key)) in order, each loaded while the caller works on the previous one."""
    keys = list(keys)
    with Prefetcher(load, keys) as prefetcher:
        for key in keys:
            yield key, prefetcher.get(key)
