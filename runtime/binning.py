"""Resampling irregular camera frames onto the model's frame clock, into a fixed window.

Why: cameras deliver frames at their own, jittery rate (30 fps ± jitter, bursts after a
stall, gaps), while the model was trained on a fixed frame clock (100 Hz, one bin per
frame, ARCHITECTURE.md). Each bin takes the newest frame captured before the bin ends
(sample-and-hold), so the model always sees "what the eye saw last", never a future frame.

`RingWindow` holds exactly the T newest bins in a buffer of 2·T frames, writing each bin
twice (at i and i+T) so the newest window is always one contiguous [T, H, W] view: the
model can read it without a copy, and nothing is allocated per frame.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class RingWindow:
    """Fixed ring of the last `window_frames` bins, oldest first when read.

    buffer: [2·T, H, W] float32; `window()` → [T, H, W] contiguous view (no copy).
    Initial content is zeros = mid-grey in contrast units (the model's "nothing seen").
    """

    def __init__(self, window_frames: int, height: int, width: int) -> None:
        if window_frames < 1:
            raise ValueError(f"window_frames must be ≥ 1, got {window_frames}")
        self.T = window_frames
        self._buf = np.zeros((2 * window_frames, height, width), dtype=np.float32)
        self._next = 0  # slot the next bin goes to (0..T-1)
        self.count = 0  # bins pushed so far

    def push(self, frame: NDArray[np.float32]) -> None:
        """Append one bin's frame [H, W] (copied into the ring; the oldest falls out)."""
        i = self._next
        self._buf[i] = frame
        self._buf[i + self.T] = frame
        self._next = (i + 1) % self.T
        self.count += 1

    def window(self) -> NDArray[np.float32]:
        """[T, H, W] view of the newest T bins, oldest first. Valid until the next push."""
        s = self._next
        return self._buf[s : s + self.T]

    def newest(self) -> NDArray[np.float32]:
        """[H, W] view of the most recently pushed bin."""
        return self._buf[(self._next - 1) % self.T]

    def reset(self) -> None:
        self._buf.fill(0.0)
        self._next = 0
        self.count = 0


class SampleAndHoldBinner:
    """Turns a stream of (frame, capture time) into one held frame per bin of the frame clock.

    Bin k covers [t0 + k·P, t0 + (k+1)·P) with P = bin period; its value is the newest
    frame whose capture time is < the bin's end. Frames older than the held one are ignored
    (timestamps must be monotonic; a late/out-of-order frame never overwrites a newer one).
    The held frame lives in one preallocated buffer; `offer` copies into it.
    """

    def __init__(
        self,
        period_ns: int,
        t0_ns: int,
        height: int,
        width: int,
        held: NDArray[np.float32] | None = None,
    ) -> None:
        """held: the buffer to hold frames in ([height, width] float32; default: a new one).
        The live loop passes a step model's bound input, so the held frame is the model's
        input without a copy."""
        if period_ns <= 0:
            raise ValueError(f"period_ns must be > 0, got {period_ns}")
        self.period_ns = period_ns
        self.t0_ns = t0_ns
        if held is None:
            held = np.zeros((height, width), dtype=np.float32)
        elif held.shape != (height, width) or held.dtype != np.float32:
            raise ValueError(
                f"held buffer must be float32 [{height}, {width}], got {held.dtype} {list(held.shape)}"
            )
        self.held = held
        self.held_t_ns: int | None = None
        self.next_bin = 0  # index of the first bin not yet closed
        self.frames_in = 0
        self.frames_ignored = 0  # out-of-order frames

    def bin_end_ns(self, k: int) -> int:
        return self.t0_ns + (k + 1) * self.period_ns

    def bins_due(self, now_ns: int) -> int:
        """How many bins have ended by now_ns and are not yet closed."""
        done = (now_ns - self.t0_ns) // self.period_ns  # bins whose end ≤ now
        return max(0, int(done) - self.next_bin)

    def accepts(self, t_ns: int) -> bool:
        return self.held_t_ns is None or t_ns >= self.held_t_ns

    def offer(self, frame: NDArray[np.float32], t_ns: int) -> bool:
        """Hold frame [H, W] captured at t_ns if it is the newest; returns whether it was."""
        if not self.accepts(t_ns):
            self.frames_ignored += 1
            return False
        np.copyto(self.held, frame)
        self.held_t_ns = t_ns
        self.frames_in += 1
        return True

    def close_bin(self, ring: RingWindow | None) -> int:
        """Close the next bin with the held frame into ring (None: a step model, which reads
        the held frame itself and needs no window); returns the bin's index."""
        if ring is not None:
            ring.push(self.held)
        k = self.next_bin
        self.next_bin += 1
        return k

    def feed(self, frame: NDArray[np.float32], t_ns: int, ring: RingWindow) -> list[int]:
        """Offline driver: close every bin that ends at or before t_ns, then hold frame.

        Returns the indices of the bins closed (each saw the previously held frame).
        Used by tests and file replays; the live loop calls bins_due/close_bin/offer itself.
        """
        closed = [self.close_bin(ring) for _ in range(self.bins_due(t_ns))]
        self.offer(frame, t_ns)
        return closed


def reference_sample_and_hold(
    frame_times_ns: NDArray[np.int64], t0_ns: int, period_ns: int, n_bins: int
) -> NDArray[np.int64]:
    """[n_bins] index of the newest frame captured before each bin's end (-1: none yet).

    A direct, vectorised statement of the binning rule, used as the reference in tests.
    frame_times_ns must be sorted (non-decreasing).
    """
    ends = t0_ns + (np.arange(n_bins, dtype=np.int64) + 1) * period_ns
    return np.searchsorted(frame_times_ns, ends, side="left").astype(np.int64) - 1
