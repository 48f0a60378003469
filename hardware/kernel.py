"""Mapping + safety for one or several arrays as a precomputed, allocation-free kernel (issue 17).

Why: the general path (`StimulationPipeline.currents` → `SafetyEnforcer.enforce_arrays`)
rebuilds masks, sorts and event lists every bin; it cost twice the neural network. In normal
operation nothing about a bin changes except the rates, so everything else — the sampling
weights, the calibration curves, the charge ceilings, the pulse parameters the enforcer would
emit — is resolved once here, into preallocated arrays, and a bin is a fixed sequence of
in-place numpy operations (``out=``), with no loop over electrodes or arrays and no object
built. Several arrays (an implant) are one kernel: a [arrays, width] layout (shorter arrays
padded with electrodes that never stimulate), with the per-array caps done row by row by
the same vectorised operations.

The kernel is *exact*, not an approximation: every step reproduces the general path's
arithmetic in the same order (the sampling sum runs in the sparse matrix's stored order, the
total-current cumulative sum in the drive order), so its frames are bit-identical. It only
takes the bins on which the general path would report nothing: whenever a bin would raise a
safety event (a bad rate, a disabled electrode asked to stimulate, an amplitude above the
enforcer's own ceiling, the total current near its cap) `run` returns False and the caller
runs the general path on that bin, so refusals and events are exactly today's.
`tests/hardware/test_kernel.py` checks the equality and the allocations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse._sparsetools import csr_matvec as _csr_matvec

from hardware.mapping import ElectrodeModel, MappingConfig
from hardware.safety import _MARGIN, _MIN_DELIVERABLE_UA, SafetyEnforcer, SafetyLimits
from hardware.types import RateField

#: Steady-state allocation: none, except that on bins where the simultaneous-electrode or
#: total-current cap must run, numpy's `ndarray.partition` allocates and frees a small scratch
#: inside the call (2,840 bytes measured with numpy 2.4 for 96 electrodes; more rows, a little
#: more, plus numpy's iterator for the per-row cumulative sum when there are several arrays).
#: Nothing else in a bin allocates (tests/hardware/test_kernel.py measures it with tracemalloc).
PARTITION_SCRATCH_BYTES = 4096


def _c(value: float, dtype: type[np.generic] = np.float64) -> NDArray[np.generic]:
    """A 0-d constant: ufuncs given one need not box a Python scalar per call."""
    return np.array(value, dtype=dtype)


@dataclass(frozen=True)
class KernelArray:
    """One array's inputs to the kernel (what `StimulationPipeline` resolved at start)."""

    weights: sparse.csr_matrix  # [2·n, n_entries]: ON rows, then OFF rows
    model: ElectrodeModel
    ceiling_ua: NDArray[np.float64]
    enforcer: SafetyEnforcer


def _stack_weights(parts: Sequence[KernelArray], width: int) -> sparse.csr_matrix:
    """[2·A·width, n_entries]: ON rows of every array (padded to width), then OFF rows, each
    row exactly as stored in its array's matrix (same entries, same order)."""
    n_in = int(parts[0].weights.shape[1])
    indptr = [np.zeros(1, dtype=np.int64)]
    indices = []
    data = []
    nnz = 0
    for half in (0, 1):
        for p in parts:
            w = p.weights.tocsr()
            n = w.shape[0] // 2
            lo, hi = int(w.indptr[half * n]), int(w.indptr[half * n + n])
            counts = np.diff(w.indptr[half * n : half * n + n + 1]).astype(np.int64)
            counts = np.r_[counts, np.zeros(width - n, dtype=np.int64)]
            indptr.append(nnz + np.cumsum(counts))
            indices.append(w.indices[lo:hi])
            data.append(w.data[lo:hi])
            nnz += hi - lo
    return sparse.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
        shape=(2 * len(parts) * width, n_in),
    )


class MappingKernel:
    """Mapping and safety of A arrays for one rate-field geometry, resolved at construction.

    Every array must share one `MappingConfig` and one `SafetyLimits` (an implant's arrays
    do). After `run(rates)` returns True, `amplitude_ua`, `phase_width_us`,
    `interphase_gap_us`, `pulse_rate_hz` and `n_pulses` ([A, width] each; row a, columns
    [:n_a] are array a's frame) hold the safe frames' fields; `set_outputs` points them at
    other arrays (a frame ring). False: this bin needs the general path (see module doc).
    """

    def __init__(
        self,
        parts: Sequence[KernelArray],
        mapping: MappingConfig,
        limits: SafetyLimits,
    ) -> None:
        if not parts:
            raise ValueError("MappingKernel: no arrays")
        f64 = np.float64
        sizes = [int(p.model.enabled.shape[0]) for p in parts]
        A = len(parts)
        W = max(sizes)
        N = A * W
        n_in = int(parts[0].weights.shape[1])
        self.n_arrays = A
        self.width = W
        self.sizes = tuple(sizes)
        self.n_electrodes = sum(sizes)
        self.n_entries = n_in

        # Sampling weights: one sparse matrix for all arrays; its product runs through
        # scipy's own CSR routine into a preallocated vector (the same arithmetic, in the
        # same order, as the general path's `weights @ rates`).
        w = _stack_weights(parts, W)
        self._w_shape = (int(w.shape[0]), int(w.shape[1]))
        self._w_indptr = w.indptr
        self._w_indices = w.indices
        self._w_data = np.ascontiguousarray(w.data, dtype=f64)
        self.weight_nnz = int(w.nnz)

        def per_electrode(get: object, pad: float, dtype: type[np.generic] = f64) -> NDArray:
            out = np.full((A, W), pad, dtype=dtype)
            for a, p in enumerate(parts):
                out[a, : sizes[a]] = get(p)  # type: ignore[operator]
            return out

        self._thr = per_electrode(lambda p: p.model.threshold_ua, 1.0)
        self._top = per_electrode(lambda p: p.model.max_comfortable_ua, 1.0)
        self._scale = per_electrode(lambda p: p.model.scale_ua, 1.0)
        self._bmax = per_electrode(lambda p: p.model.max_brightness, 1.0)
        self._top_b = per_electrode(lambda p: p.model._top_brightness, 0.0)
        self._enabled = per_electrode(lambda p: p.model.enabled, False, np.bool_)
        self._ceiling = per_electrode(lambda p: p.ceiling_ua, 0.0)
        pw_row = np.full((1, W), mapping.phase_width_us)
        self._enf_ceiling = per_electrode(
            lambda p: p.enforcer._ceiling(pw_row[:, : p.model.enabled.shape[0]])[0], 0.0
        )
        # Electrodes the limits disable but the calibration does not: the mapper would drive
        # them, the enforcer would zero them with an event.
        self._extra_disabled = per_electrode(
            lambda p: p.enforcer.disabled_mask & p.model.enabled, False, np.bool_
        )
        self._check_disabled = bool(self._extra_disabled.any())
        self._check_ceiling = not np.array_equal(self._enf_ceiling, self._ceiling)

        # Rates and sampling buffers.
        self._rates = np.zeros(n_in, dtype=f64)
        self._fin = np.empty(n_in, dtype=bool)
        self._ge = np.empty(n_in, dtype=bool)
        self._ge_last = self._ge[n_in - 1 :] if n_in else np.ones(1, dtype=bool)
        self._both = np.empty(2 * N, dtype=f64)
        self._on_part = self._both[:N].reshape(A, W)
        self._off_part = self._both[N:].reshape(A, W)

        # Per-electrode buffers [A, W] (flat views where a flat index is needed).
        def buf(dtype: type[np.generic] = f64) -> NDArray:
            return np.empty((A, W), dtype=dtype)

        self._drive = buf()
        self._tmp = buf()
        self._f1 = buf()
        self._cur_ext = np.zeros(N + 1, dtype=f64)  # [N]: the padding slot (current 0)
        self._cur = self._cur_ext[:N].reshape(A, W)
        self._cur_tail = self._cur_ext[N:]
        self._on = buf(np.bool_)
        self._on_f = buf()
        self._b1 = buf(np.bool_)
        self._b2 = buf(np.bool_)
        self._live = buf(np.bool_)
        self._live_f = buf()
        self._live32 = buf(np.float32)
        self._live16 = buf(np.uint16)
        self._back = buf()
        self._next32 = buf(np.float32)
        self._i1 = buf(np.int64)
        self._i3 = buf(np.int64)
        self._sel_i = buf(np.int64)
        self._zero = _c(0.0)
        self._one = _c(1.0)
        self._almost_one = _c(1.0 - 1e-12)
        self._rate_max = _c(mapping.rate_max_hz)
        self._min_drive = _c(mapping.min_drive)
        self._min_deliv = _c(_MIN_DELIVERABLE_UA)
        self._neginf32 = np.array(-np.inf, dtype=np.float32)

        # Row sums from flat running sums: row a = acc[a·W + W − 1] − acc[a·W − 1], with a
        # leading zero slot (so a = 0 needs no special case).
        self._acc_ext = np.zeros(N + 1, dtype=f64)
        self._acc = self._acc_ext[1:]
        self._row_end = (np.arange(A) * W + W).astype(np.intp)
        self._row_start = (np.arange(A) * W).astype(np.intp)
        self._rows_a = np.empty(A, dtype=f64)
        self._rows_b = np.empty(A, dtype=f64)
        self._rows_c = np.empty(A, dtype=f64)  # (in-place ufuncs on 1-element arrays allocate)
        self._rows_flag = np.empty(A, dtype=bool)
        self._rows_flag2 = np.empty(A, dtype=bool)
        self._bacc = np.empty(max(N, 1), dtype=bool)
        self._bacc_last = self._bacc[-1:]
        self._bacc_a = np.empty(A, dtype=bool)
        self._bacc_a_last = self._bacc_a[-1:]
        #: Whether the last bin needed the simultaneous-electrode / total-current caps.
        self.caps_ran = False

        # Simultaneous-electrode cap: the k strongest drives per array (ties: lower index
        # first), then the total-current cap along that order.
        self._k = min(int(limits.max_active_electrodes), W)
        kk = max(self._k, 1)
        self._kk = kk
        self._k_f = _c(float(self._k))
        self._k_i = _c(self._k, np.int64)
        self._one_i = _c(1, np.int64)
        self._masked_ext = np.full(N + 1, -np.inf, dtype=f64)  # [N]: the padding slot
        self._masked = self._masked_ext[:N].reshape(A, W)
        self._part = buf()
        self._kth = W - kk
        self._t_idx = (np.arange(A)[:, None] * W + self._kth + np.zeros((1, W), int)).astype(
            np.intp
        )
        self._t = buf()
        self._row_of = np.repeat(np.arange(A, dtype=np.intp), W).reshape(A, W)
        self._row_prev_end = (np.arange(A) * W).astype(np.intp)  # in a leading-zero ext
        self._iacc_ext = np.zeros(N + 1, dtype=np.int64)
        self._iacc = self._iacc_ext[1:].reshape(A, W)
        self._row_base_i = np.empty(A, dtype=np.int64)
        self._row_base_full = buf(np.int64)
        self._rem = np.empty(A, dtype=np.int64)
        self._rem2 = np.empty(A, dtype=np.int64)
        self._rem_full = buf(np.int64)
        self._slot_base = (np.arange(A)[:, None] * (kk + 1)).astype(np.int64) + np.zeros(
            (1, W), np.int64
        )
        self._slot_pad = self._slot_base + kk
        self._pad_idx = _c(N, np.intp)
        self._flat_arange = np.arange(N, dtype=np.intp)
        self._compact_ext = np.empty(A * (kk + 1), dtype=np.intp)
        self._compact_view = self._compact_ext.reshape(A, kk + 1)[:, :kk]
        self._compact = np.empty((A, kk), dtype=np.intp)
        self._dsel = np.empty((A, kk), dtype=f64)
        self._csel = np.empty((A, kk), dtype=f64)
        kidx = np.arange(kk)
        base = (np.arange(A) * kk)[:, None, None]
        self._col_of = (base + kidx[None, None, :] + np.zeros((1, kk, 1), int)).astype(np.intp)
        self._rowk_of = (base + kidx[None, :, None] + np.zeros((1, 1, kk), int)).astype(np.intp)
        self._drow = np.empty((A, kk, kk), dtype=f64)
        self._dcol = np.empty((A, kk, kk), dtype=f64)
        self._prec = np.empty((A, kk, kk), dtype=bool)
        self._prec_flat = self._prec.reshape(-1)
        self._eqm = np.empty((A, kk, kk), dtype=bool)
        self._lower = np.broadcast_to(np.tri(kk, kk, -1, dtype=bool), (A, kk, kk)).copy()
        self._prec_i = np.empty(A * kk * kk, dtype=np.intp)
        self._prec_acc_ext = np.zeros(A * kk * kk + 1, dtype=np.intp)
        self._prec_acc = self._prec_acc_ext[1:]
        self._pr_end = (np.arange(A * kk) * kk + kk).astype(np.intp).reshape(A, kk)
        self._pr_start = (np.arange(A * kk) * kk).astype(np.intp).reshape(A, kk)
        self._rank = np.empty((A, kk), dtype=np.intp)
        self._rank_b = np.empty((A, kk), dtype=np.intp)
        self._rank_base = (np.arange(A)[:, None] * kk + np.zeros((1, kk), int)).astype(np.intp)
        self._ordered = np.empty((A, kk), dtype=f64)
        self._ocs = np.empty((A, kk), dtype=f64)
        self._ok = np.empty((A, kk), dtype=bool)
        self._okf = np.empty((A, kk), dtype=f64)
        self._okf_sel = np.empty((A, kk), dtype=f64)
        self._ordered_row0 = self._ordered[0]
        self._ocs_row0 = self._ocs[0]
        self._total_cap = _c(limits.max_total_current_ua)
        # Below this sum (in any order) no partial sum can pass the total cap: summing
        # ≤ 1,024 non-negative float64 values errs by far less than 1e-9 relative.
        self._total_safe = _c(limits.max_total_current_ua * (1.0 - 1e-9))
        # The enforcer sums pairwise, the kernel by running sums: bins within 1e-9 of the
        # enforcer's threshold are left to the enforcer.
        self._total_margin = _c(limits.max_total_current_ua * _MARGIN * (1.0 - 1e-9))

        # What the enforcer does to a live electrode's pulse parameters: asked once, of the
        # enforcer itself (a fresh one, so that its counters stay untouched; at least one
        # simultaneous electrode, so that a cap of 0 does not veto the probe).
        probe_limits = limits.model_copy(
            update={"max_active_electrodes": max(1, limits.max_active_electrodes)}
        )
        self.eligible = False
        pw32 = gap32 = rate32 = np.float32(0.0)
        pulses = np.uint16(0)
        for p in parts:
            live_at = np.nonzero(~p.enforcer.disabled_mask)[0]
            if live_at.size == 0:
                continue
            probe = SafetyEnforcer(probe_limits, p.enforcer.array)
            n_el = int(p.model.enabled.shape[0])
            j = int(live_at[0])
            one = np.zeros((1, n_el))
            one[0, j] = min(float(p.ceiling_ua[j]), 1.0) * 0.5
            on = one > 0
            (a_, pw_, g_, r_, n_), events = probe.enforce_arrays(
                one,
                np.where(on, mapping.phase_width_us, 0.0),
                np.where(on, mapping.interphase_gap_us, 0.0),
                np.where(on, mapping.pulse_rate_hz, 0.0),
                np.where(on, mapping.n_pulses, 0),
            )
            self.eligible = not events[0] and bool(a_[0, j] > 0)
            pw32, gap32, rate32, pulses = pw_[0, j], g_[0, j], r_[0, j], n_[0, j]
            break
        self._pw32 = np.array(pw32, dtype=np.float32)
        self._gap32 = np.array(gap32, dtype=np.float32)
        self._rate32 = np.array(rate32, dtype=np.float32)
        self._pulses16 = np.array(pulses, dtype=np.uint16)

        # Flat views of [A, W] buffers (made once: a view is an object).
        self._on_f_flat = self._on_f.reshape(-1)
        self._cur_flat = self._cur_ext[:N]
        self._b2_flat = self._b2.reshape(-1)
        self._i1_flat = self._i1.reshape(-1)
        self._i3_flat = self._i3.reshape(-1)
        self._iacc_flat = self._iacc_ext[1:]
        self._part_flat = self._part.reshape(-1)
        self._row_last = (np.arange(A) * W + W - 1).astype(np.intp)

        self.amplitude_ua = np.zeros((A, W), dtype=np.float32)
        self.phase_width_us = np.zeros((A, W), dtype=np.float32)
        self.interphase_gap_us = np.zeros((A, W), dtype=np.float32)
        self.pulse_rate_hz = np.zeros((A, W), dtype=np.float32)
        self.n_pulses = np.zeros((A, W), dtype=np.uint16)

    def set_outputs(
        self,
        amplitude_ua: NDArray[np.float32],
        phase_width_us: NDArray[np.float32],
        interphase_gap_us: NDArray[np.float32],
        pulse_rate_hz: NDArray[np.float32],
        n_pulses: NDArray[np.uint16],
    ) -> None:
        """Write the next bins into these [A, width] arrays (a frame ring's slot)."""
        self.amplitude_ua = amplitude_ua
        self.phase_width_us = phase_width_us
        self.interphase_gap_us = interphase_gap_us
        self.pulse_rate_hz = pulse_rate_hz
        self.n_pulses = n_pulses

    def bind_ring(self, slots: Sequence[Sequence[NDArray[np.generic]]]) -> None:
        """Register a frame ring's slots once; `use_slot(i)` then switches without objects."""
        self._ring_slots = [tuple(s) for s in slots]

    def use_slot(self, i: int) -> None:
        """Write the next bins into registered slot i (five attribute stores, no object)."""
        s = self._ring_slots[i]
        self.amplitude_ua = s[0]  # type: ignore[assignment]
        self.phase_width_us = s[1]  # type: ignore[assignment]
        self.interphase_gap_us = s[2]  # type: ignore[assignment]
        self.pulse_rate_hz = s[3]  # type: ignore[assignment]
        self.n_pulses = s[4]  # type: ignore[assignment]

    def run(self, rates_hz: NDArray[np.floating]) -> bool:
        """One bin: rates [n_entries] → the frame fields above. False: use the general path.

        Allocation-free after the first call (see PARTITION_SCRATCH_BYTES).
        """
        if not self.eligible:
            return False
        r = self._rates
        np.copyto(r, rates_hz, casting="same_kind")
        # A bad rate (NaN, inf, negative) is an event: the general path reports it.
        np.isfinite(r, out=self._fin)
        np.greater_equal(r, self._zero, out=self._ge)
        np.logical_and(self._fin, self._ge, out=self._fin)
        np.logical_and.accumulate(self._fin, out=self._ge)
        if not self._ge_last:
            return False
        np.minimum(r, self._rate_max, out=r)

        # Sampling (ON rows, then OFF rows), the ON/OFF rule, normalisation.
        np.copyto(self._both, self._zero)
        _csr_matvec(
            self._w_shape[0],
            self._w_shape[1],
            self._w_indptr,
            self._w_indices,
            self._w_data,
            r,
            self._both,
        )
        d = self._drive
        np.maximum(self._on_part, self._off_part, out=d)
        np.divide(d, self._rate_max, out=d)
        np.maximum(d, self._zero, out=d)
        np.minimum(d, self._one, out=d)

        # Drive → current: the inverse brightness curve (ElectrodeModel.current_for; its
        # clip of the drive to [0, 1] and of the ratio at 0 are no-ops here and skipped).
        t = self._tmp
        c = self._cur
        np.multiply(d, self._top_b, out=t)
        np.divide(t, self._bmax, out=t)
        np.minimum(t, self._almost_one, out=t)
        np.negative(t, out=t)
        np.log1p(t, out=t)
        np.multiply(self._scale, t, out=t)
        np.subtract(self._thr, t, out=c)
        np.maximum(c, self._thr, out=c)
        np.minimum(c, self._top, out=c)
        # Off below min drive and where disabled; clipped to the charge ceiling.
        np.greater_equal(d, self._min_drive, out=self._on)
        np.logical_and(self._on, self._enabled, out=self._on)
        np.copyto(self._on_f, self._on)
        np.minimum(c, self._ceiling, out=c)
        np.multiply(c, self._on_f, out=c)

        if self._k == 0:
            np.copyto(c, self._zero)
        else:
            # The caps cannot bind on an array with few enough electrodes on and a low sum.
            self._row_sums(self._on_f_flat)
            np.greater(self._rows_a, self._k_f, out=self._rows_flag)
            self._row_sums(self._cur_flat)
            np.greater(self._rows_a, self._total_safe, out=self._rows_flag2)
            self.caps_ran = self._any_rows(self._rows_flag) or self._any_rows(self._rows_flag2)
            if self.caps_ran:
                self._cap_active_and_total()
        return self._enforce()

    def _row_sums(self, x_flat: NDArray[np.float64]) -> None:
        """self._rows_a[a] = the sum of row a of x [A, W] (given flat), by one running sum."""
        np.add.accumulate(x_flat, out=self._acc)
        self._acc_ext.take(self._row_end, out=self._rows_c, mode="clip")
        self._acc_ext.take(self._row_start, out=self._rows_b, mode="clip")
        np.subtract(self._rows_c, self._rows_b, out=self._rows_a)

    def _any_rows(self, mask: NDArray[np.bool_]) -> bool:
        np.logical_or.accumulate(mask, out=self._bacc_a)
        return bool(self._bacc_a_last)

    def _any(self, flat_mask: NDArray[np.bool_]) -> bool:
        """mask.any() (of a flat view) without the temporaries numpy's reduction allocates."""
        np.logical_or.accumulate(flat_mask, out=self._bacc)
        return bool(self._bacc_last)

    def _row_cumsum_i(self, x_bool: NDArray[np.bool_]) -> None:
        """self._i1[a, i] = number of True in x[a, :i+1] (integers: exact from a flat sum)."""
        np.copyto(self._i3, x_bool)
        if self.n_arrays == 1:  # one row: the flat running sum is the row's
            np.add.accumulate(self._i3_flat, out=self._i1_flat)
            return
        np.add.accumulate(self._i3_flat, out=self._iacc_flat)
        self._iacc_ext.take(self._row_prev_end, out=self._row_base_i, mode="clip")
        self._row_base_i.take(self._row_of, out=self._row_base_full, mode="clip")
        np.subtract(self._iacc, self._row_base_full, out=self._i1)

    def _cap_active_and_total(self) -> None:
        """Per array: keep the k strongest drives (stable), then drop along that order past
        the total cap."""
        c = self._cur
        m = self._masked
        # where(on, drive, -1): drives are ≥ 0, so -1 ranks every off electrode last.
        np.multiply(self._drive, self._on_f, out=m)
        np.subtract(self._on_f, self._one, out=self._f1)
        np.add(m, self._f1, out=m)
        np.copyto(self._part, m)
        self._part.partition(self._kth, axis=1)  # column kth: each row's k-th largest
        self._part_flat.take(self._t_idx, out=self._t, mode="clip")
        gt, eq, sel = self._b1, self._b2, self._on
        np.greater(m, self._t, out=gt)
        np.equal(m, self._t, out=eq)
        self._row_cumsum_i(gt)
        # rem[a] = k − (number above the threshold in row a); ties kept by index up to rem.
        self._i1.take(self._row_last, out=self._rem2, mode="clip")
        np.subtract(self._k_i, self._rem2, out=self._rem)
        self._rem.take(self._row_of, out=self._rem_full, mode="clip")
        self._row_cumsum_i(eq)
        np.less_equal(self._i1, self._rem_full, out=self._live)
        np.logical_and(eq, self._live, out=eq)
        np.logical_or(gt, eq, out=gt)
        np.logical_and(sel, gt, out=sel)  # selected: on and among the row's k strongest
        # Slot of each selected electrode (its rank by index within its row); others → pad.
        pos, si = self._i1, self._sel_i
        self._row_cumsum_i(sel)
        np.copyto(si, sel)
        np.subtract(pos, self._one_i, out=pos)
        np.add(pos, self._slot_base, out=pos)
        np.multiply(pos, si, out=pos)
        np.subtract(self._one_i, si, out=si)
        np.multiply(si, self._slot_pad, out=si)
        np.add(pos, si, out=pos)
        np.copyto(self._compact_ext, self._pad_idx)
        self._compact_ext.put(self._i1_flat, self._flat_arange)
        np.copyto(self._compact, self._compact_view)
        np.copyto(self._on_f, sel)
        np.multiply(c, self._on_f, out=c)
        self._masked_ext.take(self._compact, out=self._dsel, mode="clip")
        self._cur_ext.take(self._compact, out=self._csel, mode="clip")
        # Rank in the drive order (ties: lower index first), cumulative current in that order.
        self._dsel.take(self._col_of, out=self._drow, mode="clip")
        self._dsel.take(self._rowk_of, out=self._dcol, mode="clip")
        np.greater(self._drow, self._dcol, out=self._prec)
        np.equal(self._drow, self._dcol, out=self._eqm)
        np.logical_and(self._eqm, self._lower, out=self._eqm)
        np.logical_or(self._prec, self._eqm, out=self._prec)
        np.copyto(self._prec_i, self._prec_flat)
        np.add.accumulate(self._prec_i, out=self._prec_acc)
        self._prec_acc_ext.take(self._pr_end, out=self._rank, mode="clip")
        self._prec_acc_ext.take(self._pr_start, out=self._rank_b, mode="clip")
        np.subtract(self._rank, self._rank_b, out=self._rank)
        np.add(self._rank, self._rank_base, out=self._rank)  # flat slot in [A, kk]
        self._ordered.put(self._rank, self._csel)
        if self.n_arrays == 1:
            np.add.accumulate(self._ordered_row0, out=self._ocs_row0)
        else:
            np.add.accumulate(self._ordered, axis=1, out=self._ocs)
        np.less_equal(self._ocs, self._total_cap, out=self._ok)
        np.copyto(self._okf, self._ok)
        self._okf.take(self._rank, out=self._okf_sel, mode="clip")
        np.multiply(self._csel, self._okf_sel, out=self._csel)
        self._cur_ext.put(self._compact, self._csel)
        np.copyto(self._cur_tail, self._zero)

    def _enforce(self) -> bool:
        """The enforcer's work on a bin it would not intervene in; False if it would."""
        c = self._cur
        b = self._b2
        if self._check_disabled:
            np.not_equal(c, self._zero, out=self._b1)
            np.logical_and(self._b1, self._extra_disabled, out=b)
            if self._any(self._b2_flat):
                return False
        if self._check_ceiling:
            np.greater(c, self._enf_ceiling, out=b)
            if self._any(self._b2_flat):
                return False
        self._row_sums(self._cur_flat)
        np.greater(self._rows_a, self._total_margin, out=self._rows_flag)
        if self._any_rows(self._rows_flag):
            return False
        live = self._live
        np.greater_equal(c, self._min_deliv, out=live)
        np.copyto(self._live_f, live)
        np.multiply(c, self._live_f, out=self._back)
        a = self.amplitude_ua
        np.copyto(a, self._back, casting="same_kind")
        # Round to float32 without exceeding the ceiling (safety._f32_le).
        np.copyto(self._back, a)
        np.greater(self._back, self._enf_ceiling, out=b)
        if self._any(self._b2_flat):
            np.nextafter(a, self._neginf32, out=self._next32)
            np.copyto(a, self._next32, where=b)
        np.copyto(self._live32, live)
        np.copyto(self._live16, live)
        np.multiply(self._live32, self._pw32, out=self.phase_width_us)
        np.multiply(self._live32, self._gap32, out=self.interphase_gap_us)
        np.multiply(self._live32, self._rate32, out=self.pulse_rate_hz)
        np.multiply(self._live16, self._pulses16, out=self.n_pulses)
        return True


class GeometryKernelCache:
    """Mixin: the kernel of the last rate-field geometry, rebuilt only when it changes.

    The live loop hands over the same position and polarity arrays every bin, so the usual
    check is by identity (no work, no allocation); new arrays are compared by value once, and
    only a different geometry calls `_build_kernel`. Shared by the single-array and implant
    pipelines, which differ only in how they build a kernel.
    """

    kernel: MappingKernel | None

    def _init_kernel_cache(self) -> None:
        self.kernel = None
        self._kernel_key: tuple[bytes, bytes] | None = None
        self._kernel_pos: object = None
        self._kernel_pol: object = None

    def _build_kernel(self, pos: NDArray[np.float64], pol: NDArray[np.int8]) -> MappingKernel:
        raise NotImplementedError

    def kernel_for(self, field: RateField) -> MappingKernel:
        """The precomputed kernel for `field`'s geometry (built on first use of a geometry)."""
        if (
            self.kernel is not None
            and field.positions_deg is self._kernel_pos
            and field.polarity is self._kernel_pol
        ):
            return self.kernel
        pos = np.ascontiguousarray(field.positions_deg, dtype=np.float64)
        pol = np.ascontiguousarray(field.polarity, dtype=np.int8)
        key = (pos.tobytes(), pol.tobytes())
        if self.kernel is None or key != self._kernel_key:
            self.kernel = self._build_kernel(pos, pol)
            self._kernel_key = key
        self._kernel_pos, self._kernel_pol = field.positions_deg, field.polarity
        return self.kernel
