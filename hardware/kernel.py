"""Mapping + safety for one array as a precomputed, allocation-free kernel (issue 17).

Why: the general path (`StimulationPipeline.currents` → `SafetyEnforcer.enforce_arrays`)
rebuilds masks, sorts and event lists every bin; it cost twice the neural network. In normal
operation nothing about a bin changes except the rates, so everything else — the sampling
weights, the calibration curves, the charge ceilings, the pulse parameters the enforcer would
emit — is resolved once here, into preallocated arrays, and a bin is a fixed sequence of
in-place numpy operations (``out=``), with no loop over electrodes and no object built.

The kernel is *exact*, not an approximation: every step reproduces the general path's
arithmetic in the same order (the sampling sum runs in the sparse matrix's stored order, the
total-current cumulative sum in the drive order), so its frames are bit-identical. It only
takes the bins on which the general path would report nothing: whenever a bin would raise a
safety event (a bad rate, a disabled electrode asked to stimulate, an amplitude above the
enforcer's own ceiling, the total current over its cap) `run` returns False and the caller
runs the general path on that bin, so refusals and events are exactly today's.
`tests/hardware/test_kernel.py` checks the equality and the zero allocation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse._sparsetools import csr_matvec as _csr_matvec

from hardware.mapping import ElectrodeModel, MappingConfig
from hardware.safety import _MARGIN, _MIN_DELIVERABLE_UA, SafetyEnforcer, SafetyLimits

#: Steady-state allocation: none, except that on bins where the simultaneous-electrode or
#: total-current cap must run, numpy's `ndarray.partition` allocates and frees a small scratch
#: inside the call (2,840 bytes measured with numpy 2.4 for 96 electrodes). Nothing else in a
#: bin allocates (tests/hardware/test_kernel.py measures both with tracemalloc).
PARTITION_SCRATCH_BYTES = 4096


def _c(value: float, dtype: type[np.generic] = np.float64) -> NDArray[np.generic]:
    """A 0-d constant: ufuncs given one need not box a Python scalar per call."""
    return np.array(value, dtype=dtype)


class MappingKernel:
    """One array's mapping and safety for one rate-field geometry, resolved at construction.

    After `run(rates)` returns True, `amplitude_ua`, `phase_width_us`, `interphase_gap_us`,
    `pulse_rate_hz` and `n_pulses` ([n_electrodes] each) hold the safe frame's fields; they
    are overwritten by the next call. False: this bin needs the general path (see module doc).
    """

    def __init__(
        self,
        weights: sparse.csr_matrix,
        model: ElectrodeModel,
        mapping: MappingConfig,
        limits: SafetyLimits,
        ceiling_ua: NDArray[np.float64],
        enforcer: SafetyEnforcer,
    ) -> None:
        n_el = int(model.enabled.shape[0])
        n_in = int(weights.shape[1])
        self.n_electrodes = n_el
        self.n_entries = n_in
        f64 = np.float64

        # Sampling weights: the sparse matrix itself; its product runs through scipy's own
        # CSR routine into a preallocated vector (the same arithmetic, in the same order, as
        # the general path's `weights @ rates`).
        w = weights.tocsr()
        self._w_shape = (int(w.shape[0]), int(w.shape[1]))
        self._w_indptr = w.indptr
        self._w_indices = w.indices
        self._w_data = np.ascontiguousarray(w.data, dtype=f64)
        self.weight_nnz = int(w.nnz)

        # Buffers (every per-bin array lives here).
        self._rates_ext = np.zeros(n_in + 1, dtype=f64)  # [n_in] = 0: the padding entry
        self._rates = self._rates_ext[:n_in]
        self._fin = np.empty(n_in, dtype=bool)
        self._ge = np.empty(n_in, dtype=bool)
        self._ge_last = self._ge[n_in - 1 :] if n_in else np.ones(1, dtype=bool)
        self._both = np.empty(w.shape[0], dtype=f64)
        self._on_part = self._both[:n_el]
        self._off_part = self._both[n_el:]
        self._drive = np.empty(n_el, dtype=f64)
        self._tmp = np.empty(n_el, dtype=f64)
        self._cur_ext = np.zeros(n_el + 1, dtype=f64)
        self._cur = self._cur_ext[:n_el]
        self._cur_tail = self._cur_ext[n_el:]
        self._on = np.empty(n_el, dtype=bool)
        self._b1 = np.empty(n_el, dtype=bool)
        self._b2 = np.empty(n_el, dtype=bool)
        self._i1 = np.empty(n_el, dtype=np.int64)
        self._i2 = np.empty(n_el, dtype=np.int64)
        self._i3 = np.empty(n_el, dtype=np.int64)
        self._f1 = np.empty(n_el, dtype=f64)
        self._acc = np.empty(n_el, dtype=f64)
        self._acc_last = self._acc[n_el - 1 :]
        self._bacc = np.empty(n_el, dtype=bool)
        self._bacc_last = self._bacc[n_el - 1 :]
        self._on_f = np.empty(n_el, dtype=f64)
        self._flag = np.zeros(1, dtype=bool)
        #: Whether the last bin needed the simultaneous-electrode / total-current caps.
        self.caps_ran = False
        self._flag2 = np.zeros(1, dtype=bool)
        self._i2_last = self._i2[n_el - 1 :]

        # Constants: the model's curves and the limits' ceilings, per electrode.
        self._thr = np.ascontiguousarray(model.threshold_ua, dtype=f64)
        self._top = np.ascontiguousarray(model.max_comfortable_ua, dtype=f64)
        self._scale = np.ascontiguousarray(model.scale_ua, dtype=f64)
        self._bmax = np.ascontiguousarray(model.max_brightness, dtype=f64)
        self._top_b = np.ascontiguousarray(model._top_brightness, dtype=f64)
        self._enabled = np.ascontiguousarray(model.enabled, dtype=bool)
        self._enabled_f = self._enabled.astype(f64)
        self._ceiling = np.ascontiguousarray(ceiling_ua, dtype=f64)
        self._zero = _c(0.0)
        self._one = _c(1.0)
        self._almost_one = _c(1.0 - 1e-12)
        self._rate_max = _c(mapping.rate_max_hz)
        self._min_drive = _c(mapping.min_drive)
        self._neginf = _c(-np.inf)

        # Simultaneous-electrode cap: the k strongest drives (ties: lower index first), then
        # the total-current cap along that order.
        self._k = min(int(limits.max_active_electrodes), n_el)
        kk = max(self._k, 1)
        self._kk = kk
        self._masked_ext = np.full(n_el + 1, -np.inf, dtype=f64)
        self._masked = self._masked_ext[:n_el]
        self._part = np.empty(n_el, dtype=f64)
        self._kth = n_el - kk
        self._t = self._part[self._kth : self._kth + 1]
        self._k_arr = _c(self._k, np.int64)
        self._rem = np.zeros(1, dtype=np.int64)
        self._one_i = _c(1, np.int64)
        self._arange = np.arange(n_el, dtype=np.intp)
        self._pad_idx = _c(n_el, np.intp)
        self._compact_ext = np.empty(kk + 1, dtype=np.intp)
        self._compact = self._compact_ext[:kk]
        self._dsel = np.empty(kk, dtype=f64)
        # [k, k] gathers of the selected drives (row a, column b → drive of b / of a): a
        # broadcast comparison would make numpy build an iterator (an allocation) per call.
        self._col_of = np.tile(np.arange(kk, dtype=np.intp), (kk, 1))
        self._row_of = np.ascontiguousarray(self._col_of.T)
        self._drow = np.empty((kk, kk), dtype=f64)
        self._dcol = np.empty((kk, kk), dtype=f64)
        self._csel = np.empty(kk, dtype=f64)
        self._prec = np.empty((kk, kk), dtype=bool)
        self._prec_flat = self._prec.reshape(-1)
        self._eqm = np.empty((kk, kk), dtype=bool)
        self._lower = np.tri(kk, kk, -1, dtype=bool)  # [a, b]: b < a
        self._rank = np.empty(kk, dtype=np.intp)
        self._ordered = np.empty(kk, dtype=f64)
        self._ocs = np.empty(kk, dtype=f64)
        self._total_cap = _c(limits.max_total_current_ua)
        self._k_f = _c(float(self._k))
        # Below this sum (in any order) no partial sum can pass the total cap: summing
        # ≤ 1,024 non-negative float64 values errs by far less than 1e-9 relative.
        self._total_safe = _c(limits.max_total_current_ua * (1.0 - 1e-9))
        # Row sums of the [k, k] precedence matrix from one flat running sum: the sum of row
        # a is acc[a·k + k − 1] − acc[a·k − 1] (acc[−1] = 0: the leading zero slot).
        self._prec_i = np.empty(kk * kk, dtype=np.intp)
        self._prec_acc_ext = np.zeros(kk * kk + 1, dtype=np.intp)
        self._prec_acc = self._prec_acc_ext[1:]
        self._row_end = np.arange(kk, dtype=np.intp) * kk + kk  # in _prec_acc_ext
        self._row_start = np.arange(kk, dtype=np.intp) * kk
        self._rank_b = np.empty(kk, dtype=np.intp)
        self._sel_i = np.empty(n_el, dtype=np.int64)
        self._okf = np.empty(kk, dtype=f64)
        self._okf_sel = np.empty(kk, dtype=f64)
        self._oexc_b = np.empty(kk, dtype=bool)

        # What the enforcer does to a live electrode's pulse parameters: asked once, of the
        # enforcer itself (a fresh one, so that its counters stay untouched).
        # (At least one simultaneous electrode, so that a cap of 0 does not veto the probe.)
        probe_limits = limits.model_copy(
            update={"max_active_electrodes": max(1, limits.max_active_electrodes)}
        )
        probe = SafetyEnforcer(probe_limits, enforcer.array)
        live_at = np.nonzero(~enforcer.disabled_mask)[0]
        self.eligible = live_at.size > 0
        pw32 = gap32 = rate32 = np.float32(0.0)
        pulses = np.uint16(0)
        if self.eligible:
            j = int(live_at[0])
            one = np.zeros((1, n_el))
            one[0, j] = min(float(self._ceiling[j]), 1.0) * 0.5
            on = one > 0
            (a, p, g, r, n), events = probe.enforce_arrays(
                one,
                np.where(on, mapping.phase_width_us, 0.0),
                np.where(on, mapping.interphase_gap_us, 0.0),
                np.where(on, mapping.pulse_rate_hz, 0.0),
                np.where(on, mapping.n_pulses, 0),
            )
            self.eligible = not events[0] and bool(a[0, j] > 0)
            pw32, gap32, rate32, pulses = p[0, j], g[0, j], r[0, j], n[0, j]
        self._pw32 = np.array(pw32, dtype=np.float32)
        self._gap32 = np.array(gap32, dtype=np.float32)
        self._rate32 = np.array(rate32, dtype=np.float32)
        self._pulses16 = np.array(pulses, dtype=np.uint16)
        pw_row = np.full((1, n_el), mapping.phase_width_us)
        self._enf_ceiling = np.ascontiguousarray(enforcer._ceiling(pw_row)[0])
        # Electrodes the limits disable but the calibration does not: the mapper would drive
        # them, the enforcer would zero them with an event.
        self._extra_disabled = enforcer.disabled_mask & self._enabled
        # The enforcer sums pairwise, the kernel sequentially: bins within 1e-9 of the
        # enforcer's threshold are left to the enforcer.
        self._total_margin = _c(limits.max_total_current_ua * _MARGIN * (1.0 - 1e-9))
        self._check_ceiling = not np.array_equal(self._enf_ceiling, self._ceiling)
        self._check_disabled = bool(self._extra_disabled.any())
        self._live_f = np.empty(n_el, dtype=f64)
        self._live32 = np.empty(n_el, dtype=np.float32)
        self._live16 = np.empty(n_el, dtype=np.uint16)
        self._min_deliv = _c(_MIN_DELIVERABLE_UA)
        self._live = np.empty(n_el, dtype=bool)
        self._back = np.empty(n_el, dtype=f64)
        self._next32 = np.empty(n_el, dtype=np.float32)
        self._neginf32 = np.array(-np.inf, dtype=np.float32)

        self.amplitude_ua = np.zeros(n_el, dtype=np.float32)
        self.phase_width_us = np.zeros(n_el, dtype=np.float32)
        self.interphase_gap_us = np.zeros(n_el, dtype=np.float32)
        self.pulse_rate_hz = np.zeros(n_el, dtype=np.float32)
        self.n_pulses = np.zeros(n_el, dtype=np.uint16)

    def run(self, rates_hz: NDArray[np.floating]) -> bool:
        """One bin: rates [n_entries] → the frame fields above. False: use the general path.

        Allocation-free after the first call (tests/hardware/test_kernel.py measures it).
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
            # The caps cannot bind when few enough electrodes are on and their sum is low.
            np.add.accumulate(self._on_f, out=self._acc)
            np.greater(self._acc_last, self._k_f, out=self._flag)
            np.add.accumulate(c, out=self._acc)
            np.greater(self._acc_last, self._total_safe, out=self._flag2)
            self.caps_ran = bool(self._flag) or bool(self._flag2)
            if self.caps_ran:
                self._cap_active_and_total()
        return self._enforce()

    def _cap_active_and_total(self) -> None:
        """Keep the k strongest drives (stable), then drop along that order past the total cap."""
        c = self._cur
        m = self._masked
        # where(on, drive, -1): drives are ≥ 0, so -1 ranks every off electrode last.
        np.multiply(self._drive, self._on_f, out=m)
        np.subtract(self._on_f, self._one, out=self._f1)
        np.add(m, self._f1, out=m)
        np.copyto(self._part, m)
        self._part.partition(self._kth)  # self._t: the k-th largest drive
        gt, eq, sel = self._b1, self._b2, self._on
        np.greater(m, self._t, out=gt)
        np.equal(m, self._t, out=eq)
        np.copyto(self._i3, gt)
        np.add.accumulate(self._i3, out=self._i2)
        np.subtract(self._k_arr, self._i2_last, out=self._rem)
        np.copyto(self._i3, eq)
        np.add.accumulate(self._i3, out=self._i1)
        np.less_equal(self._i1, self._rem, out=self._live)
        np.logical_and(eq, self._live, out=eq)
        np.logical_or(gt, eq, out=gt)
        np.logical_and(sel, gt, out=sel)  # selected: on and among the k strongest
        # Compact the selected indices, ascending, padded with n (a zero current, -inf drive).
        # Target slot of each selected electrode (its rank by index); the others go to slot k.
        pos, si = self._i1, self._sel_i
        np.copyto(si, sel)
        np.add.accumulate(si, out=pos)
        np.subtract(pos, self._one_i, out=pos)
        np.multiply(pos, si, out=pos)
        np.subtract(self._one_i, si, out=si)
        np.multiply(si, self._k_arr, out=si)
        np.add(pos, si, out=pos)
        np.copyto(self._compact_ext, self._pad_idx)
        self._compact_ext.put(pos, self._arange)
        np.copyto(self._on_f, sel)
        np.multiply(c, self._on_f, out=c)
        self._masked_ext.take(self._compact, out=self._dsel, mode="clip")
        self._cur_ext.take(self._compact, out=self._csel, mode="clip")
        # Rank in the drive order (ties: lower index first), cumulative current in that order.
        self._dsel.take(self._col_of, out=self._drow, mode="clip")
        self._dsel.take(self._row_of, out=self._dcol, mode="clip")
        np.greater(self._drow, self._dcol, out=self._prec)
        np.equal(self._drow, self._dcol, out=self._eqm)
        np.logical_and(self._eqm, self._lower, out=self._eqm)
        np.logical_or(self._prec, self._eqm, out=self._prec)
        np.copyto(self._prec_i, self._prec_flat)
        np.add.accumulate(self._prec_i, out=self._prec_acc)
        self._prec_acc_ext.take(self._row_end, out=self._rank, mode="clip")
        self._prec_acc_ext.take(self._row_start, out=self._rank_b, mode="clip")
        np.subtract(self._rank, self._rank_b, out=self._rank)
        self._ordered.put(self._rank, self._csel)
        np.add.accumulate(self._ordered, out=self._ocs)
        np.less_equal(self._ocs, self._total_cap, out=self._oexc_b)
        np.copyto(self._okf, self._oexc_b)
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
            if self._any(b):
                return False
        if self._check_ceiling:
            np.greater(c, self._enf_ceiling, out=b)
            if self._any(b):
                return False
        np.add.accumulate(c, out=self._acc)
        np.greater(self._acc_last, self._total_margin, out=self._flag)
        if self._flag:
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
        if self._any(b):
            np.nextafter(a, self._neginf32, out=self._next32)
            np.copyto(a, self._next32, where=b)
        np.copyto(self._live32, live)
        np.copyto(self._live16, live)
        np.multiply(self._live32, self._pw32, out=self.phase_width_us)
        np.multiply(self._live32, self._gap32, out=self.interphase_gap_us)
        np.multiply(self._live32, self._rate32, out=self.pulse_rate_hz)
        np.multiply(self._live16, self._pulses16, out=self.n_pulses)
        return True

    def _any(self, mask: NDArray[np.bool_]) -> bool:
        """mask.any() without the temporaries numpy's reduction allocates."""
        np.logical_or.accumulate(mask, out=self._bacc)
        return bool(self._bacc_last)
