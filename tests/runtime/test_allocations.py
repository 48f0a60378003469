"""The allocation counter of `npe bench` (runtime.bench.allocations) can tell 0 from > 0.

Why: "0 allocations per bin" is only a measurement if the same counter reads more than 0 on
a loop that does allocate; both loops below are known by construction.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.bench.allocations import count_allocations, npe_file, stage_of

HERE = "*tests/runtime/test_allocations.py"


def test_a_loop_that_allocates_nothing_counts_zero_per_bin() -> None:
    buf = np.zeros(64, dtype=np.float32)

    def in_place(n: int) -> None:
        for _ in range(n):
            np.add(buf, 1.0, out=buf)  # into its own buffer: nothing new survives a bin

    count = count_allocations(in_place, bins=2_000, short_bins=200, warmup_bins=200, inside=HERE)
    assert abs(count.net_blocks_per_bin) < 0.01


def test_a_loop_that_keeps_one_object_per_bin_counts_one_per_bin() -> None:
    kept: list[object] = []

    def leaking(n: int) -> None:
        for _ in range(n):
            kept.append(object())  # one block kept per bin (the list grows in chunks too)

    count = count_allocations(leaking, bins=2_000, short_bins=200, warmup_bins=200, inside=HERE)
    assert count.net_blocks_per_bin >= 0.99
    assert count.net_blocks_long > count.net_blocks_short  # more bins, more blocks kept


def test_the_counter_refuses_passes_it_cannot_difference() -> None:
    with pytest.raises(ValueError, match="short_bins < bins"):
        count_allocations(lambda n: None, bins=10, short_bins=10, warmup_bins=0)


def test_allocations_are_charged_to_the_npe_file_and_its_stage() -> None:
    import tracemalloc

    tracemalloc.start(8)
    try:
        from runtime.bench.timing import InferenceResult

        # timing.py → latency.py (summarise_ns) → numpy: charged to latency.py
        InferenceResult("x", {}, np.arange(10, dtype=np.int64)).stats()
        snap = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    files = {npe_file(t.traceback) for t in snap.traces}
    # numpy's own frames are skipped to the npe caller nearest to them, not the outermost
    assert "runtime/latency.py" in files
    assert stage_of("runtime/latency.py") == "loop"
    assert stage_of("hardware/kernel.py") == "map" and stage_of("hardware/audit.py") == "send"
    assert stage_of("runtime/bundle.py") == "other"
