"""Python allocations per bin in the live loop's steady state (issue 17: "0 per bin").

Method (tracemalloc, in its own pass after the timed runs, so that tracing — which slows
every allocation — never touches a latency figure): trace from before a warm-up pass, then
snapshot, run `bins` bins, snapshot, run `short_bins` bins, snapshot. Each pass costs a
constant once (the run's start and stop records, its summary); the difference of the two
passes cancels it, so

    net blocks per bin = (net(long) − net(short)) / (bins − short_bins)

counts only what each further bin keeps. Cyclic garbage is collected before every snapshot
(it is not kept; the collection also empties the interpreter's free lists, which each pass
refills by a bounded amount, hence a tolerance in the target). Only blocks allocated with
the loop's own frames on the stack count (`inside`): a progress display's thread in the
same process is not the loop. Each block is charged to the innermost npe file on its
traceback (`npe_file`), grouped into the loop's stages. A loop that allocates nothing per
bin reads 0, one that keeps one block per bin 1.0 (both tested). Cost: tracing with
tracebacks makes a bin ~6× dearer in CPU (measured: 2 → 13 ms per bin on this VM).
Temporaries allocated and freed within a bin leave no net block; they show as
`transient_peak_bytes`, the most traced memory above its level at the start of the long pass.
Allocations outside Python's allocators (ONNX Runtime's C++ arena) are not seen.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

#: npe source files, grouped into the loop's stages (any other npe file is "other").
STAGE_OF_FILE: dict[str, str] = {
    "runtime/sources.py": "capture",
    "runtime/synthetic_scenes.py": "capture",
    "runtime/preprocess.py": "preprocess",
    "runtime/binning.py": "bin",
    "runtime/inference.py": "infer",
    "hardware/pipeline.py": "map",
    "hardware/kernel.py": "map",
    "hardware/mapping.py": "map",
    "hardware/safety.py": "map",
    "hardware/implant.py": "map",
    "hardware/types.py": "map",
    "hardware/link.py": "send",
    "hardware/wire.py": "send",
    "hardware/audit.py": "send",
    "runtime/loop.py": "loop",
    "runtime/latency.py": "loop",
    "runtime/clock.py": "loop",
}

STAGES = ("capture", "preprocess", "bin", "infer", "map", "send", "loop", "other")
_PACKAGES = ("runtime/", "hardware/")
#: Frames kept per traced allocation: enough to reach the loop from ORT's and numpy's
#: internals (measured: at most 9 deep); more only slows the tracing down.
TRACEBACK_FRAMES = 16


def stage_of(filename: str) -> str:
    """The stage an npe source file belongs to ("other" if none)."""
    posix = PurePath(filename).as_posix()
    for key, stage in STAGE_OF_FILE.items():
        if posix.endswith(key):
            return stage
    return "other"


def npe_file(traceback: tracemalloc.Traceback) -> str:
    """The innermost npe source file (runtime/…, hardware/…) an allocation came through.

    Why not the innermost file: an ONNX Runtime or numpy allocation is charged to the npe
    call that asked for it (runtime/inference.py, hardware/kernel.py), which is what can be
    changed; "?" if no npe file is on the traceback.
    """
    for frame in reversed(traceback):  # a Traceback runs from the oldest frame
        posix = PurePath(frame.filename).as_posix()
        if "site-packages" in posix or "/tests/" in posix:
            continue
        for pkg in _PACKAGES:
            i = posix.rfind("/" + pkg)
            if i >= 0:
                return posix[i + 1 :]
    return "?"


@dataclass(frozen=True)
class AllocationCount:
    """The result of `count_allocations` (see the module docstring)."""

    warmup_bins: int
    bins: int
    short_bins: int
    net_blocks_long: int
    net_blocks_short: int
    transient_peak_bytes: int
    #: per npe file (`npe_file`): net blocks of the long pass minus those of the short pass
    by_file: dict[str, int]

    @property
    def net_blocks_per_bin(self) -> float:
        return (self.net_blocks_long - self.net_blocks_short) / (self.bins - self.short_bins)

    def by_stage(self) -> dict[str, float]:
        """Net blocks per bin by loop stage (files grouped by `stage_of`)."""
        out = dict.fromkeys(STAGES, 0.0)
        for f, n in self.by_file.items():
            out[stage_of(f)] += n / (self.bins - self.short_bins)
        return out


def _snapshot(inside: str) -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(True, inside, all_frames=True),)
    )


def _diff(after: tracemalloc.Snapshot, before: tracemalloc.Snapshot) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in after.compare_to(before, "traceback"):
        if s.count_diff:
            f = npe_file(s.traceback)
            out[f] = out.get(f, 0) + s.count_diff
    return out


def count_allocations(
    run_bins: Callable[[int], object],
    bins: int,
    short_bins: int,
    warmup_bins: int,
    inside: str = "*runtime/loop.py",
) -> AllocationCount:
    """Net Python blocks `run_bins(n)` keeps per bin in the steady state.

    run_bins(n) must run n bins of the loop under test (whatever it returns is dropped).
    inside: count only blocks allocated with a frame of this file (fnmatch pattern) on the
    stack, i.e. by the loop's own thread: a progress display's or a stimulator thread's
    allocations in the same process are not the loop's.
    """
    if not 0 < short_bins < bins:
        raise ValueError(f"need 0 < short_bins < bins, got {short_bins} and {bins}")
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(TRACEBACK_FRAMES)
    try:
        run_bins(warmup_bins)
        s0 = _snapshot(inside)
        tracemalloc.reset_peak()
        level = tracemalloc.get_traced_memory()[0]
        run_bins(bins)
        peak = tracemalloc.get_traced_memory()[1] - level
        s1 = _snapshot(inside)
        run_bins(short_bins)
        s2 = _snapshot(inside)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    long_d, short_d = _diff(s1, s0), _diff(s2, s1)
    files = set(long_d) | set(short_d)
    by_file = {f: long_d.get(f, 0) - short_d.get(f, 0) for f in files}
    return AllocationCount(
        warmup_bins=warmup_bins,
        bins=bins,
        short_bins=short_bins,
        net_blocks_long=sum(long_d.values()),
        net_blocks_short=sum(short_d.values()),
        transient_peak_bytes=max(0, peak),
        by_file={f: n for f, n in by_file.items() if n},
    )
