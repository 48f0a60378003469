"""What became of the frames a run sent: sent, received, accepted, refused by reason, lost.

Why one model: `npe run` prints it and `npe bench` judges a target on it ("0 lost in the
paced run"), and both must count the same way. The sender's side is the link's counters
(`hardware.link.LinkStats`), the receiver's side the simulated stimulator's final snapshot
(`hardware.stimulator.StimulatorStatsSnapshot`); a frame that left the link and never reached
the stimulator (a full receive buffer) is *lost*, one it received and refused is *rejected*
with the stimulator's reason. With a real stimulator (a `--link` given) the receiver's side
is unknown here and only what was sent is reported.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from hardware.link import LinkStats
from hardware.stimulator import StimulatorStatsSnapshot

#: The reason under which frames the stimulator's safety re-check refused are counted.
BREACH_REASON = "breach_after_enforcement"


class DeliverySummary(BaseModel):
    """Frames sent by the link against what the (simulated) stimulator did with them.

    sent: frames the link wrote; send_errors: writes the transport refused (never sent).
    received/accepted/lost: None when no simulated stimulator ran (a real link).
    rejected: received but refused, by reason (including `BREACH_REASON`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sent: int
    send_errors: int = 0
    #: The transport's reason for the latest refused write (None: none refused).
    send_error: str | None = None
    received: int | None = None
    accepted: int | None = None
    rejected: dict[str, int] = {}
    lost: int | None = None

    @classmethod
    def of(cls, link: LinkStats, stimulator: StimulatorStatsSnapshot | None) -> DeliverySummary:
        """Combine the link's counters with the stimulator's final snapshot (if any)."""
        if stimulator is None:
            return cls(
                sent=link.sent, send_errors=link.send_errors, send_error=link.last_send_error
            )
        rejected = dict(stimulator.rejected)
        if stimulator.breaches_after_enforcement:
            rejected[BREACH_REASON] = stimulator.breaches_after_enforcement
        return cls(
            sent=link.sent,
            send_errors=link.send_errors,
            send_error=link.last_send_error,
            received=stimulator.received,
            accepted=stimulator.accepted,
            rejected=rejected,
            lost=link.sent - stimulator.received,
        )

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def not_accepted(self) -> int | None:
        """Frames sent that were not accepted (lost + rejected); None without a receiver."""
        if self.accepted is None:
            return None
        return self.sent - self.accepted

    @property
    def accounted(self) -> bool:
        """sent = accepted + rejected + lost, and nothing received that was not sent.

        False means a loss the counters cannot explain (e.g. the stimulator received
        datagrams from someone else); True without a receiver (nothing to check against).
        """
        if self.accepted is None or self.lost is None:
            return True
        return self.lost >= 0 and self.sent == self.accepted + self.rejected_total + self.lost

    def line(self) -> str:
        """One human line, every refusal with its reason (a loss is reported, never hidden)."""
        refused = ""
        if self.send_errors:
            why = f": {self.send_error}" if self.send_error else ""
            refused = f"; {self.send_errors} not sent, refused by the transport{why}"
        if self.received is None:
            return (
                f"stimulator: {self.sent} frames sent (no simulated stimulator to count them)"
                f"{refused}"
            )
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"stimulator: {self.sent} frames sent, {self.received} received ({self.lost} lost), "
            f"{self.accepted} accepted, rejected: {reasons}{refused}"
        )

    @classmethod
    def total(cls, parts: list[DeliverySummary]) -> DeliverySummary:
        """The sum over several links (an implant): counts added, refusals merged by reason;
        received/accepted/lost stay None unless every part had a simulated stimulator."""
        rejected: dict[str, int] = {}
        for p in parts:
            for k, v in p.rejected.items():
                rejected[k] = rejected.get(k, 0) + v
        counted = bool(parts) and all(p.received is not None for p in parts)
        errors = [p.send_error for p in parts if p.send_error]
        return cls(
            sent=sum(p.sent for p in parts),
            send_errors=sum(p.send_errors for p in parts),
            send_error=errors[-1] if errors else None,
            received=sum(p.received or 0 for p in parts) if counted else None,
            accepted=sum(p.accepted or 0 for p in parts) if counted else None,
            rejected=rejected,
            lost=sum(p.lost or 0 for p in parts) if counted else None,
        )


class LinkDelivery(BaseModel):
    """One array link of an implant run: its label, link spec, the acknowledgements its
    stimulator returned and its `DeliverySummary` (the run summary's per-link row)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    link: str
    acks: int = 0
    nacks: int = 0
    delivery: DeliverySummary

    def line(self) -> str:
        """The per-link line `npe run` prints under the total."""
        return f"  {self.label} {self.link}: {self.delivery.line()}"
