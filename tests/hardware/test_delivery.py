"""Delivery counts over a real UDP link to a real simulated stimulator add up: every frame
sent is accepted, refused with its reason, or lost on the way (hardware.delivery)."""

from __future__ import annotations

import secrets
import time

import numpy as np
import pytest

import hardware.stimulator as stimulator_module
from hardware.arrays import load_array
from hardware.delivery import DeliverySummary
from hardware.link import open_link
from hardware.safety import SafetyLimits
from hardware.stimulator import SimulatedStimulator
from hardware.types import StimulationFrame
from hardware.wire import now_us


def _frames(n: int) -> list[StimulationFrame]:
    ids = load_array("utah96").electrode_ids
    out = []
    for seq in range(1, n + 1):
        amp = np.zeros(len(ids))
        amp[seq % len(ids)] = 20.0
        out.append(
            StimulationFrame(
                sequence=seq,
                timestamp_ns=time.monotonic_ns(),
                electrode_ids=ids,
                amplitude_ua=amp,
                phase_width_us=np.where(amp > 0, 170.0, 0.0),
                interphase_gap_us=np.where(amp > 0, 60.0, 0.0),
                pulse_rate_hz=np.where(amp > 0, 300.0, 0.0),
                n_pulses=np.where(amp > 0, 3, 0),
            )
        )
    return out


def _deliver(
    stim: SimulatedStimulator, frames: list[StimulationFrame], gap_s: float
) -> DeliverySummary:
    stim.start()
    link = open_link(f"udp://127.0.0.1:{stim.port}", stim.key)
    try:
        for f in frames:
            link.send(f)
            if gap_s:
                time.sleep(gap_s)
    finally:
        link.close()
        stim.drain()
        stim.stop()
    return DeliverySummary.of(link.stats, stim.stats.snapshot())


def _stimulator(**kw: object) -> SimulatedStimulator:
    arr = load_array("utah96")
    return SimulatedStimulator("127.0.0.1", 0, secrets.token_bytes(32), SafetyLimits(), arr, **kw)  # type: ignore[arg-type]


def test_paced_frames_are_all_accepted() -> None:
    d = _deliver(_stimulator(), _frames(30), gap_s=0.005)
    assert d.sent == d.received == d.accepted == 30
    assert d.lost == 0 and d.rejected == {} and d.accounted and d.not_accepted == 0
    assert "30 frames sent, 30 received (0 lost), 30 accepted, rejected: none" in d.line()


def test_refused_frames_are_counted_with_their_reason() -> None:
    # The stimulator's clock runs 10 s ahead: every frame arrives "sent 10 s ago".
    stim = _stimulator(clock_us=lambda: now_us() + 10_000_000)
    d = _deliver(stim, _frames(12), gap_s=0.002)
    assert d.sent == 12 and d.accepted == 0 and d.lost == 0
    assert sum(d.rejected.values()) == 12 and len(d.rejected) == 1  # one reason, named
    assert d.accounted and d.not_accepted == 12
    reason = next(iter(d.rejected))
    assert f"rejected: {reason} 12" in d.line()


def test_a_flood_into_a_tiny_buffer_loses_frames_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A receive buffer of about one datagram, and 1,500 frames back to back.
    monkeypatch.setattr(stimulator_module, "RECEIVE_BUFFER_BYTES", 2048)
    d = _deliver(_stimulator(), _frames(1500), gap_s=0.0)
    assert d.received is not None and d.accepted is not None and d.lost is not None
    assert d.lost > 0  # the kernel dropped datagrams the stimulator never saw
    assert d.lost == d.sent - d.received
    assert d.sent == d.accepted + sum(d.rejected.values()) + d.lost  # every frame accounted
    assert d.accounted and d.not_accepted == d.sent - d.accepted


def test_counts_that_do_not_add_up_are_flagged() -> None:
    from hardware.link import LinkStats
    from hardware.stimulator import StimulatorStatsSnapshot

    # More received than sent: someone else's datagrams; the counts cannot explain them.
    d = DeliverySummary.of(LinkStats(sent=5), StimulatorStatsSnapshot(received=7, accepted=7))
    assert d.lost == -2 and not d.accounted
    # A real link: nothing to check against, only what was sent.
    real = DeliverySummary.of(LinkStats(sent=5), None)
    assert real.received is None and real.accounted and "no simulated stimulator" in real.line()


def test_the_total_over_an_implants_links_adds_every_count_and_merges_reasons() -> None:
    """`DeliverySummary.total` (an implant's line): counts added, refusals merged by reason,
    still accounted; with one real link among them the receiver's side is unknown (None)."""
    a = DeliverySummary(sent=10, received=9, accepted=7, rejected={"stale": 2}, lost=1)
    b = DeliverySummary(
        sent=5, send_errors=1, received=5, accepted=3, rejected={"stale": 1, "bad_tag": 1}, lost=0
    )
    t = DeliverySummary.total([a, b])
    assert (t.sent, t.send_errors, t.received, t.accepted, t.lost) == (15, 1, 14, 10, 1)
    assert t.rejected == {"stale": 3, "bad_tag": 1} and t.accounted
    assert "15 frames sent, 14 received (1 lost), 10 accepted" in t.line()
    real = DeliverySummary.total([a, DeliverySummary(sent=4)])
    assert real.sent == 14 and real.received is None and real.accepted is None
    assert DeliverySummary.total([]).sent == 0


def test_frames_the_transport_refused_are_in_the_line_with_the_reason(
    utah, key, make_frame
) -> None:  # type: ignore[no-untyped-def]
    """A UDP link to an address where nothing listens: the kernel refuses some of the writes
    (its "port unreachable" comes back on the connected socket), and the one-line report
    says how many were not sent and why, with or without a simulated stimulator."""
    import socket

    from hardware.link import LinkStats
    from hardware.stimulator import StimulatorStatsSnapshot

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    rx.close()  # nothing listens there any more
    link = open_link(f"udp://127.0.0.1:{port}", key)
    try:
        for s in range(1, 7):
            link.send(make_frame(utah, amp=10.0, pulses=1, sequence=s))
    finally:
        link.close()
    assert link.stats.send_errors >= 1 and link.stats.sent + link.stats.send_errors == 6
    assert link.stats.last_send_error is not None
    assert "ConnectionRefusedError" in link.stats.last_send_error
    for d in (
        DeliverySummary.of(link.stats, None),
        DeliverySummary.of(link.stats, StimulatorStatsSnapshot(received=0, accepted=0)),
    ):
        line = d.line()
        assert f"{link.stats.send_errors} not sent, refused by the transport" in line, line
        assert "Connection refused" in line and "\n" not in line
    ok = DeliverySummary.of(LinkStats(sent=3), None)
    assert "refused by the transport" not in ok.line()
