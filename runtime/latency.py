"""Per-stage latency records in a fixed array, and their percentiles.

Why fixed: the live loop must not allocate per bin, and a run of hours must not grow
memory; the recorder keeps the newest `capacity` bins (default 100 000 = 1000 s at
100 Hz) in a preallocated [capacity, n_stages] int64 array (nanoseconds).
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict


#: Stages of one bin, in order: read/decode the frame, preprocess it, bin it into the ring,
#: run the model, map rates → stimulation (hardware pipeline incl. safety), send + audit;
#: "total" is their wall-clock sum (capture → stimulation frame written). "cpu" is the loop
#: thread's CPU time for the bin (time.thread_time_ns): the work itself, without the time the
#: thread waited for a core or the GIL — on a shared, loaded machine it separates "too much
#: work" from "not scheduled". "frame_age" (real clock only, else 0) runs from the capture
#: timestamp of the frame the bin used to the stimulation frame written: it adds the
#: sample-and-hold wait (up to one camera frame interval) to "total". "late" (real clock only)
#: is how long after its deadline the bin's work began: near zero normally; a bin is dropped
#: only after a stall of about a whole period, and this is where such stalls show.
class Stage(IntEnum):
    """The stages, by their column in a LatencyRecorder row (written and read by name)."""

    CAPTURE = 0
    PREPROCESS = 1
    BIN = 2
    INFER = 3
    MAP = 4
    SEND = 5
    TOTAL = 6
    CPU = 7
    FRAME_AGE = 8
    LATE = 9

    @property
    def label(self) -> str:
        """The stage's name in summaries and JSON ("frame_age")."""
        return self.name.lower()


STAGES: tuple[str, ...] = tuple(s.label for s in Stage)
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


class LatencyRecorder:
    """Ring of per-bin stage durations [capacity, len(stages)] in ns."""

    def __init__(self, stages: tuple[str, ...] = STAGES, capacity: int = 100_000) -> None:
        self.stages = stages
        self.capacity = capacity
        self.data = np.zeros((capacity, len(stages)), dtype=np.int64)
        self.count = 0

    def row(self) -> NDArray[np.int64]:
        """The row to fill for the next bin (zeroed); commit() makes it count."""
        r = self.data[self.count % self.capacity]
        r.fill(0)
        return r

    def commit(self) -> None:
        self.count += 1

    def recorded(self) -> NDArray[np.int64]:
        """[m, n_stages] the recorded rows (oldest order not guaranteed after wrap)."""
        return self.data[: min(self.count, self.capacity)]

    def recent(self, n: int) -> NDArray[np.int64]:
        """[≤ n, n_stages] roughly the newest n rows (for the live status line)."""
        m = min(self.count, self.capacity)
        if m <= n:
            return self.data[:m]
        end = self.count % self.capacity
        if end >= n:
            return self.data[end - n : end]
        return np.concatenate([self.data[self.capacity - (n - end) :], self.data[:end]])

    def summary_ms(self, rows: NDArray[np.int64] | None = None) -> dict[str, dict[str, float]]:
        """{stage: {p50, p90, p99, p99.9, max, mean}} in milliseconds."""
        d = self.recorded() if rows is None else rows
        return summarise_ns({s: d[:, i] for i, s in enumerate(self.stages)})


def summarise_ns(samples: dict[str, NDArray[np.int64]]) -> dict[str, dict[str, float]]:
    """Percentiles (p50, p90, p99, p99.9), max and mean in ms of each named ns sample array."""
    out: dict[str, dict[str, float]] = {}
    for name, x in samples.items():
        if x.size == 0:
            out[name] = {f"p{p:g}": float("nan") for p in PERCENTILES} | {
                "max": float("nan"),
                "mean": float("nan"),
            }
            continue
        ms = x.astype(np.float64) / 1e6
        q = np.percentile(ms, PERCENTILES)
        out[name] = {f"p{p:g}": float(v) for p, v in zip(PERCENTILES, q, strict=True)}
        out[name]["max"] = float(ms.max())
        out[name]["mean"] = float(ms.mean())
    return out


class LatencyStats(BaseModel):
    """Percentiles, max and mean of one stage or timer, in ms (None: nothing was measured).

    The typed form of one `summarise_ns` entry, used wherever latencies cross a boundary
    (run summary, bench report) so that readers use attributes; `p999` is the 99.9th.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, q: dict[str, float]) -> LatencyStats:
        """From a `summarise_ns` entry (NaN, i.e. no samples, becomes None)."""

        def v(key: str) -> float | None:
            x = q.get(key)
            return None if x is None or not math.isfinite(x) else float(x)

        return cls(
            p50=v("p50"), p90=v("p90"), p99=v("p99"), p999=v("p99.9"), max=v("max"), mean=v("mean")
        )

    @classmethod
    def of_ns(cls, samples: NDArray[np.int64]) -> LatencyStats:
        """Directly from samples in ns."""
        return cls.of(summarise_ns({"x": samples})["x"])

    def row(self) -> tuple[str, ...]:
        """p50, p90, p99, p99.9, max as table cells ("-" where not measured)."""
        return tuple("-" if x is None else f"{x:.3f}" for x in self.quantiles())

    def quantiles(self) -> tuple[float | None, ...]:
        return (self.p50, self.p90, self.p99, self.p999, self.max)
