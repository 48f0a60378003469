"""The simulated stimulator in its own process: lower priority than the loop, still working.

Why a test: on a 2-core computer the simulator must not preempt the real-time loop each time
a datagram wakes it (runtime.hardware_chain.STIMULATOR_NICE); and a niced simulator must still
receive, check and accept every frame sent through the real UDP link.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from hardware.chain import STIMULATOR_NICE
from hardware.types import StimulationFrame
from runtime.hardware_chain import build_chain


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_stimulator_process_runs_niced_and_accepts_every_frame(tmp_path: Path) -> None:
    chain = build_chain("utah96", log_path=tmp_path / "audit.log", stimulator="process")
    try:
        child = chain.stimulator._proc.pid  # type: ignore[union-attr]
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, child) == min(19, own + STIMULATOR_NICE)
        ids = chain.array.electrode_ids
        for seq in range(1, 21):
            amp = np.zeros(len(ids))
            amp[seq % len(ids)] = 30.0
            frame = StimulationFrame(
                sequence=seq,
                timestamp_ns=time.monotonic_ns(),
                electrode_ids=ids,
                amplitude_ua=amp,
                phase_width_us=np.where(amp > 0, 170.0, 0.0),
                interphase_gap_us=np.where(amp > 0, 60.0, 0.0),
                pulse_rate_hz=np.where(amp > 0, 300.0, 0.0),
                n_pulses=np.where(amp > 0, 3, 0),
            )
            chain.link.send(frame)
            time.sleep(0.01)  # 100 frames/s, as the runtime sends them
        time.sleep(0.1)
    finally:
        chain.close()
    stats = chain.stimulator_stats()
    assert stats is not None
    assert stats.received == 20 and stats.accepted == 20
    assert stats.breaches_after_enforcement == 0
