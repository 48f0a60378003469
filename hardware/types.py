"""The typed objects that cross into and out of `hardware` (see ARCHITECTURE.md, "contracts").

`RateField` is what the runtime hands over each bin; `StimulationFrame` is what leaves for
the stimulator. Both are frozen and check their own shapes, so a malformed hand-over fails
at the boundary with a message that names the field, not deep inside the mapper.
Values (NaN rates, absurd currents) are *not* refused here: turning bad values into zero
stimulation is the safety layer's job, and it must never stop the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from hardware import compiled

#: Polarity codes of a rate-field entry (cell or rate-map pixel).
POLARITY_OFF = -1
POLARITY_UNKNOWN = 0
POLARITY_ON = 1


@dataclass(frozen=True)
class RateField:
    """Firing rates in spikes/s, each at a position in the visual field.

    Cells of a population model and pixels of a fully convolutional rate map are the same
    thing here: one entry per (position, channel).

    Attributes:
        rates_hz: [n] float32 firing rates (spikes/s). May hold NaN/inf from a faulty model;
            the safety layer zeroes those electrodes.
        positions_deg: [n, 2] float32 (x, y) degrees of visual angle from the fixation point,
            x to the right, y up.
        polarity: [n] int8, +1 ON, -1 OFF, 0 unknown; the mapper's ON/OFF rule uses it.
        timestamp_ns: monotonic time (time.monotonic_ns) of the bin these rates belong to.
    """

    rates_hz: NDArray[np.float32]
    positions_deg: NDArray[np.float32]
    polarity: NDArray[np.int8]
    timestamp_ns: int = 0

    def __post_init__(self) -> None:
        n = self.rates_hz.shape[0] if self.rates_hz.ndim == 1 else -1
        if n < 0:
            raise ValueError(
                f"RateField.rates_hz: expected shape [n], got {list(self.rates_hz.shape)}"
            )
        if self.positions_deg.shape != (n, 2):
            raise ValueError(
                f"RateField.positions_deg: expected shape [{n}, 2], "
                f"got {list(self.positions_deg.shape)}"
            )
        if self.polarity.shape != (n,):
            raise ValueError(
                f"RateField.polarity: expected shape [{n}], got {list(self.polarity.shape)}"
            )

    @property
    def n(self) -> int:
        return int(self.rates_hz.shape[0])

    def _refill(self, rates_hz: NDArray[np.float32], timestamp_ns: int) -> None:
        """Give the live loop's one rate field its next bin's rates and time (runtime.loop).

        Why a frozen class is written here: the loop hands the pipeline the same positions and
        polarity every bin; building and validating a new field per bin cost ~3 µs of a
        budget of tens. The shape check of construction is repeated for the new rates.
        """
        if rates_hz.shape != self.rates_hz.shape:
            raise ValueError(
                f"RateField.rates_hz: expected shape {list(self.rates_hz.shape)}, "
                f"got {list(rates_hz.shape)}"
            )
        object.__setattr__(self, "rates_hz", rates_hz)
        object.__setattr__(self, "timestamp_ns", timestamp_ns)


@dataclass(frozen=True)
class StimulationFrame:
    """One update of every electrode of an array: cathodic-first, charge-balanced biphasic pulses.

    Index i of every array refers to electrode ``electrode_ids[i]`` of the array in use.
    An electrode with amplitude 0 or 0 pulses is off.

    Attributes:
        sequence: strictly increasing frame counter (the link rejects replays with it).
        timestamp_ns: monotonic time the frame was made.
        electrode_ids: [n_electrodes] ids, in the array's order.
        amplitude_ua: [n_electrodes] float32 current of each phase (µA, ≥ 0).
        phase_width_us: [n_electrodes] float32 duration of each phase (µs).
        interphase_gap_us: [n_electrodes] float32 gap between cathodic and anodic phase (µs).
        pulse_rate_hz: [n_electrodes] float32 pulses per second within the train.
        n_pulses: [n_electrodes] uint16 pulses to deliver in this update.
    """

    sequence: int
    timestamp_ns: int
    electrode_ids: tuple[str, ...]
    amplitude_ua: NDArray[np.float32]
    phase_width_us: NDArray[np.float32]
    interphase_gap_us: NDArray[np.float32]
    pulse_rate_hz: NDArray[np.float32]
    n_pulses: NDArray[np.uint16]
    #: Whether the compiled codec (hardware.fused_codec) may read the fields as they are:
    #: float32 ×4 and uint16, 1-D, C-contiguous. Frames the pipelines make are; a caller's
    #: other dtypes take numpy's casts.
    native: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        n = len(self.electrode_ids)
        for name in (
            "amplitude_ua",
            "phase_width_us",
            "interphase_gap_us",
            "pulse_rate_hz",
            "n_pulses",
        ):
            shape = getattr(self, name).shape
            if shape != (n,):
                raise ValueError(
                    f"StimulationFrame.{name}: expected shape [{n}] (one per electrode), got {list(shape)}"
                )
        # `native` is decided once here: a frame's arrays are fixed at construction (a ring
        # frame refills them in place), and the live path asks three times per bin (wire,
        # audit, active count).
        object.__setattr__(self, "native", _native_fields(self))

    @property
    def n_electrodes(self) -> int:
        return len(self.electrode_ids)

    @property
    def fields(
        self,
    ) -> tuple[
        NDArray[np.float32],
        NDArray[np.float32],
        NDArray[np.float32],
        NDArray[np.float32],
        NDArray[np.uint16],
    ]:
        """The five per-electrode arrays in wire order (amplitude, phase width, gap, rate,
        pulses): what the encoders take."""
        return (
            self.amplitude_ua,
            self.phase_width_us,
            self.interphase_gap_us,
            self.pulse_rate_hz,
            self.n_pulses,
        )

    def _restamp(self, sequence: int, timestamp_ns: int) -> None:
        """Give a ring frame its next bin's sequence and time (hardware.pipeline only).

        Why a frozen class is written here: the pipeline's frame ring refills the same frames
        bin after bin instead of building one per bin; nothing else may change a frame.
        """
        object.__setattr__(self, "sequence", sequence)
        object.__setattr__(self, "timestamp_ns", timestamp_ns)

    @property
    def active(self) -> NDArray[np.bool_]:
        """[n_electrodes] True where the electrode delivers current in this frame."""
        return (self.amplitude_ua > 0) & (self.n_pulses > 0)

    @property
    def charge_per_phase_nc(self) -> NDArray[np.float32]:
        """[n_electrodes] charge per phase in nC (µA × µs = pC; / 1000 → nC)."""
        return (self.amplitude_ua * self.phase_width_us / 1000.0).astype(np.float32)

    @classmethod
    def zeros(
        cls, electrode_ids: tuple[str, ...], sequence: int, timestamp_ns: int
    ) -> StimulationFrame:
        """A frame that stimulates nothing: what every fault falls back to."""
        n = len(electrode_ids)
        z = np.zeros(n, dtype=np.float32)
        return cls(
            sequence=sequence,
            timestamp_ns=timestamp_ns,
            electrode_ids=electrode_ids,
            amplitude_ua=z,
            phase_width_us=z.copy(),
            interphase_gap_us=z.copy(),
            pulse_rate_hz=z.copy(),
            n_pulses=np.zeros(n, dtype=np.uint16),
        )


_F32 = np.dtype(np.float32)
_U16 = np.dtype(np.uint16)


def _native_fields(frame: StimulationFrame) -> bool:
    return (
        frame.amplitude_ua.dtype == _F32
        and frame.phase_width_us.dtype == _F32
        and frame.interphase_gap_us.dtype == _F32
        and frame.pulse_rate_hz.dtype == _F32
        and frame.n_pulses.dtype == _U16
        and frame.amplitude_ua.flags.c_contiguous
        and frame.phase_width_us.flags.c_contiguous
        and frame.interphase_gap_us.flags.c_contiguous
        and frame.pulse_rate_hz.flags.c_contiguous
        and frame.n_pulses.flags.c_contiguous
        and frame.amplitude_ua.ndim == 1
    )


def count_active(frame: StimulationFrame) -> int:
    """Electrodes that deliver current in `frame` (`frame.active`'s count), without building
    the two masks `active` does: one compiled loop when the fields are exactly typed."""
    codec = compiled.codec_module()
    if codec is not None and frame.native:
        return int(codec.count_active(frame.amplitude_ua, frame.n_pulses))
    return int(np.count_nonzero(frame.active))
