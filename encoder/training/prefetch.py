"""Build the next batches on a background thread while the model trains on the current one.

Why: with the stimulus left on disk (`encoder.lazy_recording`) each batch costs an HDF5 read
and a uint8 → contrast conversion; done in line, the optimiser waits for it every step.
`Prefetcher` runs the batch generator on one thread and hands batches over through a
bounded queue (`depth` batches at most, so memory stays bounded whatever the disk does).
HDF5 decompression and numpy conversion release the GIL for much of their time, and
torch's kernels do too, so the two overlap. The order of batches is the generator's own:
prefetching changes no result. `wait_ms` counts how long the consumer was blocked, for the
"fraction of time waiting on data" figure of the memory benchmark.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher(Generic[T]):
    """Iterate `make()`'s items, produced `depth` ahead on a daemon thread.

    Use as an iterator; `close()` (or exhausting it) stops and joins the thread. An exception
    in the producer is raised in the consumer at the item where it happened.
    """

    def __init__(self, make: Callable[[], Iterator[T]], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be ≥ 1, got {depth}")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.wait_ms = 0.0
        self._thread = threading.Thread(target=self._run, args=(make,), daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make: Callable[[], Iterator[T]]) -> None:
        try:
            for item in make():
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failure(exc))
            return
        self._put(_DONE)

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        t0 = time.monotonic()
        item = self._queue.get()
        self.wait_ms += (time.monotonic() - t0) * 1000.0
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)
