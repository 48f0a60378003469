"""Mapping + safety for one or several arrays as a precomputed, allocation-free kernel (issue 17).

Why: the general path (`StimulationPipeline.currents` → `SafetyEnforcer.enforce_arrays`)
rebuilds masks, sorts and event lists every bin; it cost twice the neural network. In normal
operation nothing about a bin changes except the rates, so everything else — the sampling
weights, the calibration curves, the charge ceilings, the float32 rounding bound, the pulse
parameters the enforcer would emit — is resolved once here, into preallocated arrays, and a
bin is a fixed, short sequence of in-place numpy operations (``out=``), with no loop over
electrodes or arrays and no object built. Several arrays (an implant) are one kernel: a
[arrays, width] layout (shorter arrays padded with electrodes that never stimulate), with
the per-array caps done row by row by the same operations.

Why so few operations: each numpy call costs ~0.5–1 µs however small its array, so the
kernel's cost is mostly its number of calls (about 30 on a bin whose caps are idle, 40 when
they bind, plus the sparse product). The savings over a literal transcription are exact
identities, each stated where it is used: the validity of every rate is one integer
comparison of its bit pattern; the disabled electrodes, the calibration curve's clips and the
charge ceiling fold into per-electrode constants; an electrode is on exactly when its current
is > 0; the float32 rounding that may not cross the ceiling is a minimum with a precomputed
bound; the caps are one stable argsort per bin in which they bind.

The kernel is *exact*, not an approximation: every value reproduces the general path's
arithmetic (the sampling sum runs in the sparse matrix's stored order, the total-current
cumulative sum in the drive order), so its frames are bit-identical. It only takes the bins
on which the general path would report nothing: whenever a bin would raise a safety event (a
bad rate, a disabled electrode asked to stimulate, an amplitude above the enforcer's own
ceiling, the total current near its cap) `run` returns False and the caller runs the general
path on that bin, so refusals and events are exactly today's.
`tests/hardware/test_kernel.py` checks the equality (seeded cases and a hypothesis property)
and the allocations.

Two forms, one arithmetic: where numba loads (`hardware.compiled`), `run` is two compiled loops
around numpy's log1p (`hardware.fused_kernel`: the same operations element by element, caps
included); otherwise the numpy calls below. Both are tested against the general path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse._sparsetools import csr_matvec as _csr_matvec

from hardware import compiled as compiled_forms
from hardware import fused_layout
from hardware.mapping import ElectrodeModel, MappingConfig
from hardware.safety import _MARGIN, _MIN_DELIVERABLE_UA, SafetyEnforcer, SafetyLimits
from hardware.types import RateField

#: Steady-state allocation: none while the simultaneous-electrode and total-current caps are
#: idle. On a bin where they must run, numpy's stable `argsort` allocates its result and a
#: merge buffer inside the call and frees them before `run` returns (≈ 6.5 kB measured with
#: numpy 2.4 for 96 electrodes; several arrays: more, plus numpy's iterator for the per-row
#: cumulative sum). Net allocation is zero (tests/hardware/test_kernel.py, tracemalloc).
CAPS_SCRATCH_BYTES = 8192

#: Bit patterns (as unsigned integers) above this are not finite non-negative float64 values:
#: negative numbers (sign bit set, including -0.0), +inf and every NaN.
_MAX_FINITE_BITS = np.array(np.float64(np.finfo(np.float64).max).view(np.uint64))


_COMPILED_RATE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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


class _Flags:
    """A bool buffer whose "any" is one ufunc call and allocates nothing.

    Why: `ndarray.any()` and `np.count_nonzero` each build a scalar or an iterator per call.
    Here the bools sit in a buffer padded to whole 64-bit words, and a running bitwise OR
    over those words (into a preallocated array) ends in a nonzero word iff one is set.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        n = int(np.prod(shape))
        words = max(1, (n + 7) // 8)
        raw = np.zeros(words * 8, dtype=bool)
        self.flags: NDArray[np.bool_] = raw[:n].reshape(shape)
        self._words = raw.view(np.uint64)
        self._acc = np.empty(words, dtype=np.uint64)
        self._last = self._acc[words - 1 :]

    def any(self) -> bool:
        np.bitwise_or.accumulate(self._words, out=self._acc)
        return bool(self._last)


def f32_round_bound(ceiling: NDArray[np.float64]) -> NDArray[np.float64]:
    """[n] bound b with float32(min(x, b)) == safety._f32_le(x, ceiling) for 0 ≤ x ≤ ceiling.

    Why: the enforcer rounds each amplitude to float32 and, where that rounding went above
    the ceiling, steps it one float32 down; that is two comparisons and a fix-up per bin.
    Let d be the largest float32 ≤ ceiling and u the next float32 above it (u > ceiling).
    Every x below the midpoint m of d and u rounds to a float32 ≤ d; every x in [m, ceiling]
    rounds to d or to u, and the enforcer turns u into d. So with b = the float64 just below
    m, min(x, b) rounds to exactly what the enforcer emits, in one operation.
    """
    c = np.asarray(ceiling, dtype=np.float64)
    d = c.astype(np.float32)
    over = d.astype(np.float64) > c
    d[over] = np.nextafter(d[over], np.float32(-np.inf))
    u = np.nextafter(d, np.float32(np.inf))
    m = (d.astype(np.float64) + u.astype(np.float64)) / 2.0
    return np.nextafter(m, -np.inf)


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
        compiled: bool | None = None,
    ) -> None:
        """compiled: True needs the compiled form, False uses numpy, None (default): the
        compiled form where it loads and `hardware.compiled.PREFER_COMPILED`, else numpy."""
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

        def per_electrode(
            get: Callable[[KernelArray], NDArray[np.generic]],
            pad: float,
            dtype: type[np.generic] = f64,
        ) -> NDArray[np.generic]:
            out = np.full((A, W), pad, dtype=dtype)
            for a, p in enumerate(parts):
                out[a, : sizes[a]] = get(p)
            return out

        enabled = per_electrode(lambda p: p.model.enabled, False, np.bool_).astype(bool)
        thr = per_electrode(lambda p: p.model.threshold_ua, 1.0)
        top = per_electrode(lambda p: p.model.max_comfortable_ua, 1.0)
        ceiling = per_electrode(lambda p: p.ceiling_ua, 0.0)
        bmax = per_electrode(lambda p: p.model.max_brightness, 1.0)
        # The kernel holds the drive negated, nd = −d (x / −r is exactly −(x / r)): then the
        # current needs no negation, and −d is the caps' sort key as it is.
        # Drive → current (ElectrodeModel.current_for), with its no-op clips dropped: ratio =
        # d·top_b/bmax ≥ 0, so t = nd·top_b/bmax = −ratio exactly, clipped at −(1 − 1e-12);
        # log1p(t) ≤ 0 makes thr − scale·log1p(t) ≥ thr (the lower clip is a no-op). The
        # upper clip and the charge ceiling are one minimum with min(top, ceiling).
        # Every per-electrode constant is a row of one block, which the compiled form
        # (hardware.fused_kernel) takes as one argument; the numpy form uses the rows.
        fk = fused_layout
        self._consts = np.zeros((fk.N_CONSTS, A, W), dtype=f64)
        consts = self._consts
        consts[fk.THR] = thr
        consts[fk.SCALE] = per_electrode(lambda p: p.model.scale_ua, 1.0)
        consts[fk.TOP_B] = per_electrode(lambda p: p.model._top_brightness, 0.0)
        consts[fk.BMAX] = bmax
        consts[fk.TOP_CEIL] = np.minimum(top, ceiling)
        self._thr = consts[fk.THR]
        self._scale = consts[fk.SCALE]
        self._top_b = consts[fk.TOP_B]
        self._bmax = consts[fk.BMAX]
        self._top_ceil = consts[fk.TOP_CEIL]
        self._divide_bmax = not bool(np.all(bmax == 1.0))  # x / 1 is x: skip it
        self._neg_almost_one = _c(-(1.0 - 1e-12))
        # On: drive ≥ min_drive and enabled, i.e. nd ≤ −min_drive; a disabled (or padding)
        # electrode's bar is −inf, which no nd in [−1, 0] reaches.
        consts[fk.NEG_MIN_DRIVE] = np.where(enabled, -mapping.min_drive, -np.inf)
        self._neg_min_drive = consts[fk.NEG_MIN_DRIVE]
        self._min_drive_positive = mapping.min_drive > 0
        pw_row = np.full((1, W), mapping.phase_width_us)
        consts[fk.ENF_CEILING] = per_electrode(
            lambda p: p.enforcer._ceiling(pw_row[:, : p.model.enabled.shape[0]])[0], 0.0
        )
        self._enf_ceiling = consts[fk.ENF_CEILING]
        consts[fk.AMP_BOUND] = f32_round_bound(self._enf_ceiling.astype(f64))
        self._amp_bound = consts[fk.AMP_BOUND]
        # Electrodes the limits disable but the calibration does not: the mapper would drive
        # them, the enforcer would zero them with an event.
        extra = per_electrode(
            lambda p: p.enforcer.disabled_mask & p.model.enabled, False, np.bool_
        ).astype(bool)
        consts[fk.EXTRA_DISABLED] = extra
        self._extra_disabled_f = consts[fk.EXTRA_DISABLED]
        self._check_disabled = bool(extra.any())
        self._check_ceiling = not np.array_equal(self._enf_ceiling, ceiling)
        # Every on electrode's current is ≥ min(thr, top, ceiling) over the enabled ones; when
        # that is > 0, "on" is exactly "current > 0", and when it is also ≥ the deliverable
        # floor, the enforcer's floor never bites (checked per bin otherwise).
        floor_on = np.minimum(thr, self._top_ceil)[enabled]
        lowest = float(floor_on.min()) if floor_on.size else 1.0
        self._check_live = lowest < _MIN_DELIVERABLE_UA

        # Rates and sampling buffers.
        self._rates = np.zeros(n_in, dtype=f64)
        self._rate_bits = self._rates.view(np.uint64)
        self._bad = _Flags((n_in,))
        self._bad2 = _Flags((n_in,))
        self._both = np.empty(2 * N, dtype=f64)
        self._on_part = self._both[:N].reshape(A, W)
        self._off_part = self._both[N:].reshape(A, W)

        # Per-electrode buffers [A, W].
        def buf(dtype: type[np.generic] = f64) -> NDArray[np.generic]:
            return np.empty((A, W), dtype=dtype)

        self._neg_drive = buf()
        self._tmp = buf()
        self._tmp2 = buf()
        # The on mask (as 0/1) and the currents side by side, so that one matrix-vector
        # product gives every array's number of electrodes on and its total current.
        self._oc = np.empty((2, A, W), dtype=f64)
        self._oc_rows = self._oc.reshape(2 * A, W)
        self._on_f = self._oc[0]
        self._cur = self._oc[1]
        self._cur_flat = self._cur.reshape(-1)
        self._cur_row = self._cur.reshape(1, N)
        self._on = buf(np.bool_)
        self._b1 = _Flags((A, W))
        self._live32 = buf(np.float32)
        self._live32_row = self._live32.reshape(1, N)
        self._live16 = buf(np.uint16)
        self._zero = _c(0.0)
        self._one = _c(1.0)
        self._rate_max = _c(mapping.rate_max_hz)
        self._neg_rate_max = _c(-mapping.rate_max_hz)
        self._neg_one = _c(-1.0)
        self._min_deliv = _c(_MIN_DELIVERABLE_UA)
        self._ones_w = np.ones(W, dtype=f64)
        self._rows = np.empty(A, dtype=f64)
        self._rows_flag = _Flags((A,))
        self._rows2 = np.empty(2 * A, dtype=f64)
        self._rows2_flag = _Flags((2 * A,))
        self._rows2_on = self._rows2_flag.flags[:1]
        self._rows2_total = self._rows2_flag.flags[1:]
        # Implant-wide check: live electrodes (float32 0/1) and float64 currents, all arrays.
        self._ones_n32 = np.ones(N, dtype=np.float32)
        self._ones_n = np.ones(N, dtype=f64)
        self._n_live = np.empty(1, dtype=np.float32)
        self._n_sum = np.empty(1, dtype=f64)
        self._n_flag = np.empty(1, dtype=bool)
        #: Whether the last bin needed the simultaneous-electrode / total-current caps.
        self.caps_ran = False

        # Simultaneous-electrode cap: the k strongest drives per array (ties: lower index
        # first), then the total-current cap along that order.
        self._k = min(int(limits.max_active_electrodes), W)
        # Below this sum (in any order) no partial sum can pass the total cap, and the
        # enforcer (which sums pairwise, the kernel by BLAS) cannot see its own cap either:
        # summing ≤ 1,024 non-negative float64 values errs by far less than 1e-9 relative.
        self._total_margin = _c(limits.max_total_current_ua * _MARGIN * (1.0 - 1e-9))
        # When k electrodes at their highest current stay below that, neither the mapper's
        # total cap nor the enforcer's can bind after the simultaneous-electrode cap (the
        # shipped defaults: 16 × 90 µA < 1,600 µA): its cumulative sum and re-check are skipped.
        highest = float(self._top_ceil[enabled].max()) if enabled.any() else 0.0
        self._total_cannot_bind = self._k * highest * (1.0 + 1e-9) <= float(self._total_margin)
        self._caps_bar = np.r_[np.full(A, float(self._k)), np.full(A, float(self._total_margin))]
        # The first k ranks of every array: [k] for one array, [A, k] for several.
        rank_shape = (self._k,) if A == 1 else (A, self._k)
        self._total_cap = _c(limits.max_total_current_ua)
        self._row_base = (np.arange(A, dtype=np.intp) * W)[:, None]
        self._flat_order = np.empty((A, W), dtype=np.intp)
        self._flat_order_k = self._flat_order[:, : self._k]
        self._ranked = np.empty(rank_shape, dtype=f64)
        self._cs = np.empty(rank_shape, dtype=f64)
        self._keep = np.empty(rank_shape, dtype=np.bool_)
        self._keep_f = np.empty(rank_shape, dtype=f64)
        self._key = buf()
        self._key_row0 = self._key[0]

        # What the enforcer does to a live electrode's pulse parameters: asked once, of the
        # enforcer itself (a fresh one, so that its counters stay untouched; at least one
        # simultaneous electrode, so that a cap of 0 does not veto the probe).
        probe_limits = limits.model_copy(
            update={"max_active_electrodes": max(1, limits.max_active_electrodes)}
        )
        self.eligible = lowest > 0.0
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
            self.eligible = self.eligible and not events[0] and bool(a_[0, j] > 0)
            pw32, gap32, rate32, pulses = pw_[0, j], g_[0, j], r_[0, j], n_[0, j]
            break
        else:
            self.eligible = False
        self._params3 = np.array([[pw32], [gap32], [rate32]], dtype=np.float32)
        self._params_flat = np.ascontiguousarray(self._params3[:, 0])
        self._pulses_1 = np.array([pulses], dtype=np.uint16)
        self._pw32 = np.array(pw32, dtype=np.float32)
        self._gap32 = np.array(gap32, dtype=np.float32)
        self._rate32 = np.array(rate32, dtype=np.float32)
        self._pulses16 = np.array(pulses, dtype=np.uint16)

        self.amplitude_ua = np.zeros((A, W), dtype=np.float32)
        self.phase_width_us = np.zeros((A, W), dtype=np.float32)
        self.interphase_gap_us = np.zeros((A, W), dtype=np.float32)
        self.pulse_rate_hz = np.zeros((A, W), dtype=np.float32)
        self.n_pulses = np.zeros((A, W), dtype=np.uint16)
        #: [3, A·W] view of a block whose rows are phase width, gap and rate, when the
        #: outputs are laid out that way (one product fills all three); None: three multiplies.
        self._params_block: NDArray[np.float32] | None = None
        self._ring_slots: list[tuple[NDArray[np.generic], ...]] = []
        self._ring_blocks: list[NDArray[np.float32] | None] = []

        # The compiled form (hardware.fused_kernel): its scalars, and its own unsigned copies
        # of the sparse structure (numba emits no negative-index wrap-around for them).
        self._fused = compiled_forms.kernel_module(compiled)
        if compiled and self._fused is None:
            raise ValueError("MappingKernel: the compiled form needs numba, which cannot load")
        self.compiled = self._fused is not None
        self._scal = np.zeros(fk.N_SCALARS, dtype=f64)
        sc = self._scal
        sc[fk.S_RATE_MAX] = mapping.rate_max_hz
        sc[fk.S_NEG_RATE_MAX] = -mapping.rate_max_hz
        sc[fk.S_NEG_ONE] = -1.0
        sc[fk.S_NEG_ALMOST_ONE] = float(self._neg_almost_one)
        sc[fk.S_DIVIDE_BMAX] = float(self._divide_bmax)
        sc[fk.S_K] = float(self._k)
        sc[fk.S_TOTAL_MARGIN] = float(self._total_margin)
        sc[fk.S_CHECK_DISABLED] = float(self._check_disabled)
        sc[fk.S_CHECK_CEILING] = float(self._check_ceiling)
        sc[fk.S_CHECK_LIVE] = float(self._check_live)
        sc[fk.S_MIN_DELIV] = _MIN_DELIVERABLE_UA
        sc[fk.S_TOTAL_CAP] = float(self._total_cap)
        sc[fk.S_TOTAL_CANNOT_BIND] = float(self._total_cannot_bind)
        sc[fk.S_MIN_DRIVE_POSITIVE] = float(self._min_drive_positive)
        if self.weight_nnz >= 2**32 or n_in >= 2**32:
            self._fused = None  # beyond the compiled form's uint32 indices (not reached)
            self.compiled = False
        self._indptr_u4 = np.ascontiguousarray(self._w_indptr, dtype=np.uint32)
        self._indices_unsigned = np.ascontiguousarray(
            self._w_indices, dtype=np.uint16 if n_in <= 2**16 else np.uint32
        )
        # The compiled calls' arguments after the rates, as tuples built once (a call with a
        # prebuilt tuple builds none); rebuilt when the output arrays change.
        self._prepare_rest = (
            self._rates,
            self._indptr_u4,
            self._indices_unsigned,
            self._w_data,
            self._both,
            self._neg_drive,
            self._tmp,
            self._consts,
            self._scal,
        )
        self._finish_args: tuple[Any, ...] = ()
        self._ring_args: list[tuple[Any, ...]] = []
        # The compiled caps' scratch: the first k ranks of one array and their keys.
        self._caps_order = np.zeros(max(1, self._k), dtype=np.int64)
        self._caps_keys = np.zeros(max(1, self._k), dtype=f64)
        self._bind_compiled_args()

    def set_outputs(
        self,
        amplitude_ua: NDArray[np.float32],
        phase_width_us: NDArray[np.float32],
        interphase_gap_us: NDArray[np.float32],
        pulse_rate_hz: NDArray[np.float32],
        n_pulses: NDArray[np.uint16],
    ) -> None:
        """Write the next bins into these [A, width] arrays (a frame ring's slot)."""
        shape = (self.n_arrays, self.width)
        for name, arr, dtype in (
            ("amplitude_ua", amplitude_ua, np.float32),
            ("phase_width_us", phase_width_us, np.float32),
            ("interphase_gap_us", interphase_gap_us, np.float32),
            ("pulse_rate_hz", pulse_rate_hz, np.float32),
            ("n_pulses", n_pulses, np.uint16),
        ):
            # Checked once here, because the compiled loops write without bounds checks.
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(
                    f"MappingKernel.set_outputs: {name} must be {dtype.__name__} {list(shape)}, "
                    f"got {arr.dtype} {list(arr.shape)}"
                )
        self.amplitude_ua = amplitude_ua
        self.phase_width_us = phase_width_us
        self.interphase_gap_us = interphase_gap_us
        self.pulse_rate_hz = pulse_rate_hz
        self.n_pulses = n_pulses
        self._params_block = _params_block(phase_width_us, interphase_gap_us, pulse_rate_hz)
        self._bind_compiled_args()

    def bind_ring(self, slots: Sequence[Sequence[NDArray[np.generic]]]) -> None:
        """Register a frame ring's slots once; `use_slot(i)` then switches without objects."""
        self._ring_slots = [tuple(s) for s in slots]
        self._ring_blocks = [
            _params_block(s[1], s[2], s[3])  # type: ignore[arg-type]
            for s in self._ring_slots
        ]
        current = (
            self.amplitude_ua,
            self.phase_width_us,
            self.interphase_gap_us,
            self.pulse_rate_hz,
            self.n_pulses,
        )
        self._ring_args = []
        for slot in self._ring_slots:
            self.set_outputs(*slot)  # type: ignore[arg-type]
            self._ring_args.append(self._finish_args)
        self.set_outputs(*current)  # binding writes nothing: the current outputs stay

    def use_slot(self, i: int) -> None:
        """Write the next bins into registered slot i (six attribute stores, no object)."""
        s = self._ring_slots[i]
        self.amplitude_ua = s[0]  # type: ignore[assignment]
        self.phase_width_us = s[1]  # type: ignore[assignment]
        self.interphase_gap_us = s[2]  # type: ignore[assignment]
        self.pulse_rate_hz = s[3]  # type: ignore[assignment]
        self.n_pulses = s[4]  # type: ignore[assignment]
        self._params_block = self._ring_blocks[i]
        if self._fused is not None:
            self._finish_args = self._ring_args[i]

    def run(self, rates_hz: NDArray[np.floating]) -> bool:
        """One bin: rates [n_entries] → the frame fields above. False: use the general path.

        Allocation-free while the caps are idle (see CAPS_SCRATCH_BYTES).
        """
        if not self.eligible:
            return False
        fk = self._fused
        if fk is not None and rates_hz.dtype in _COMPILED_RATE_DTYPES:
            if rates_hz.shape != self._rates.shape:  # compiled loops do not check bounds
                return False
            return self._run_compiled(fk, rates_hz)
        r = self._rates
        np.copyto(r, rates_hz, casting="same_kind")
        # A bad rate (NaN, ±inf, negative) is an event: the general path reports it. One
        # unsigned comparison of the bit patterns finds all of them (and -0.0, which is
        # harmless but rare enough to leave to the general path).
        np.greater(self._rate_bits, _MAX_FINITE_BITS, out=self._bad.flags)
        if self._bad.any() and not self._only_negative_zeros():
            return False
        np.minimum(r, self._rate_max, out=r)

        # Sampling (ON rows, then OFF rows), the ON/OFF rule, normalisation. The drive is
        # ≥ 0 (non-negative weights and rates), so only its upper clip remains.
        both = self._both
        both.fill(0.0)
        _csr_matvec(
            self._w_shape[0],
            self._w_shape[1],
            self._w_indptr,
            self._w_indices,
            self._w_data,
            r,
            both,
        )
        nd = self._neg_drive
        np.maximum(self._on_part, self._off_part, out=nd)
        np.divide(nd, self._neg_rate_max, out=nd)
        np.maximum(nd, self._neg_one, out=nd)

        # Drive → current (see the constructor for the identities), then off below the
        # minimum drive and where disabled.
        t = self._tmp
        c = self._cur
        np.multiply(nd, self._top_b, out=t)
        if self._divide_bmax:
            np.divide(t, self._bmax, out=t)
        np.maximum(t, self._neg_almost_one, out=t)
        np.log1p(t, out=t)
        np.multiply(self._scale, t, out=t)
        np.subtract(self._thr, t, out=c)
        np.minimum(c, self._top_ceil, out=c)
        np.less_equal(nd, self._neg_min_drive, out=self._on)
        np.copyto(self._on_f, self._on)
        np.multiply(c, self._on_f, out=c)

        if self._k == 0:
            c.fill(0.0)
            self.caps_ran = False
        else:
            # The caps cannot bind on an array with few enough electrodes on and a low sum
            # (on ⟺ current > 0, see the constructor).
            self.caps_ran = self._caps_may_bind()
            if self.caps_ran:
                self._cap_active_and_total()
                if not self._total_cannot_bind and self._over_total_margin():
                    return False
        return self._enforce()

    def _bind_compiled_args(self) -> None:
        """The compiled `finish` / `enforce` arguments for the current output arrays."""
        out = (
            self.amplitude_ua,
            self.phase_width_us,
            self.interphase_gap_us,
            self.pulse_rate_hz,
            self.n_pulses,
            self._live32,
            self._params_flat,
            self._pulses_1,
        )
        self._finish_args = (
            self._tmp,
            self._neg_drive,
            self._on_f,
            self._cur,
            self._consts,
            self._scal,
            self._caps_order,
            self._caps_keys,
            out,
        )

    def _run_compiled(self, fk: Any, rates_hz: NDArray[np.floating]) -> bool:
        """`run` in two compiled loops around numpy's log1p (hardware.fused_kernel)."""
        if not rates_hz.flags.c_contiguous:
            rates_hz = np.ascontiguousarray(rates_hz)
        if not fk.sample_and_prepare(rates_hz, *self._prepare_rest):
            return False  # a bad rate: the general path reports it
        np.log1p(self._tmp, out=self._tmp)
        status = fk.finish(*self._finish_args)
        self.caps_ran = status >= fk.CAPS
        return bool(status == fk.SERVED or status == fk.SERVED + fk.CAPS)

    def _only_negative_zeros(self) -> bool:
        """Whether every flagged rate is -0.0 (a valid rate of 0, as the general path has it)."""
        b2 = self._bad2.flags
        np.equal(self._rates, self._zero, out=b2)
        np.greater(self._bad.flags, b2, out=b2)  # flagged and not ±0
        return not self._bad2.any()

    def _caps_may_bind(self) -> bool:
        """Whether some array has more than k electrodes on or a total current within reach
        of the cap (one product for both)."""
        np.dot(self._oc_rows, self._ones_w, out=self._rows2)
        np.greater(self._rows2, self._caps_bar, out=self._rows2_flag.flags)
        if self.n_arrays == 1:
            return bool(self._rows2_on) or bool(self._rows2_total)
        return self._rows2_flag.any()

    def _over_total_margin(self) -> bool:
        """Whether some array's total current is within reach of the enforcer's cap."""
        np.dot(self._cur, self._ones_w, out=self._rows)
        np.greater(self._rows, self._total_margin, out=self._rows_flag.flags)
        if self.n_arrays == 1:
            return bool(self._rows_flag.flags)
        return self._rows_flag.any()

    def _cap_active_and_total(self) -> None:
        """Per array: rank by drive (strongest first, ties: lower index first, off electrodes
        last), keep the first k, and along that order drop every electrode whose cumulative
        current passes the total cap (the general path's `currents`, step for step).

        Only the first k ranks are gathered and summed: the general path zeroes every later
        rank before its cumulative sum, so the sums over the first k are the same additions.
        """
        nd, on_f, key = self._neg_drive, self._on_f, self._key
        # key = −drive where on, after every on key where off.
        np.multiply(nd, on_f, out=key)  # on: −d < 0 (d ≥ min_drive > 0); off: ±0
        if not self._min_drive_positive:  # an on drive may be 0: off must be above it
            np.subtract(self._one, on_f, out=self._tmp2)
            np.add(key, self._tmp2, out=key)
        fo: NDArray[np.intp]
        if self.n_arrays == 1:
            order = np.argsort(self._key_row0, kind="stable")  # the one allocation (see top)
            fo = order[: self._k]
        else:
            order = np.argsort(key, axis=-1, kind="stable")
            np.add(order, self._row_base, out=self._flat_order)
            fo = self._flat_order_k
        ranked = self._ranked
        self._cur_flat.take(fo, out=ranked, mode="clip")
        if not self._total_cannot_bind:
            np.add.accumulate(ranked, axis=-1, out=self._cs)
            np.less_equal(self._cs, self._total_cap, out=self._keep)
            np.copyto(self._keep_f, self._keep)
            np.multiply(ranked, self._keep_f, out=ranked)
        self._cur_flat.fill(0.0)
        self._cur_flat.put(fo, ranked, mode="clip")

    def _enforce(self) -> bool:
        """The enforcer's work on a bin it would not intervene in; False if it would."""
        c = self._cur
        b1 = self._b1.flags
        if self._check_disabled:
            np.multiply(c, self._extra_disabled_f, out=self._tmp)
            np.greater(self._tmp, self._zero, out=b1)
            if self._b1.any():
                return False
        if self._check_ceiling:
            np.greater(c, self._enf_ceiling, out=b1)
            if self._b1.any():
                return False
        if self._check_live:
            np.greater_equal(c, self._min_deliv, out=b1)
            np.copyto(self._tmp, b1)
            np.multiply(c, self._tmp, out=c)
        # Round to float32 without exceeding the ceiling (see f32_round_bound).
        np.minimum(c, self._amp_bound, out=self._tmp)
        np.copyto(self.amplitude_ua, self._tmp, casting="same_kind")
        self.refill_from_amplitudes()
        return True

    def refill_from_amplitudes(self) -> None:
        """Phase width, gap, rate and pulses from the amplitudes: the enforcer's pulse
        parameters where the amplitude is > 0 (those electrodes are live), 0 elsewhere. Also
        used after the implant's caps have zeroed amplitudes in a served slot."""
        live = self._live32
        np.sign(self.amplitude_ua, out=live)  # 1 where the electrode stimulates, else 0
        block = self._params_block
        if block is not None:
            # [3, 1] · [1, N]: a product with one term each, i.e. exactly live × parameter.
            np.dot(self._params3, self._live32_row, out=block)
        else:
            np.multiply(live, self._pw32, out=self.phase_width_us)
            np.multiply(live, self._gap32, out=self.interphase_gap_us)
            np.multiply(live, self._rate32, out=self.pulse_rate_hz)
        np.copyto(self._live16, live, casting="unsafe")
        np.multiply(self._live16, self._pulses16, out=self.n_pulses)

    # -- implant-wide checks ----------------------------------------------------------
    def live_count_and_total_above(
        self, max_active: NDArray[np.float32], total_ua: NDArray[np.float64]
    ) -> bool:
        """After a served bin: whether more electrodes stimulate over all arrays together
        than `max_active`, or their summed float64 current exceeds `total_ua` (0-d arrays).

        Why here: the kernel still holds the live mask and the float64 currents, so the
        implant's check is two products and two comparisons.
        """
        np.dot(self._live32_row, self._ones_n32, out=self._n_live)  # exact below 2**24
        np.greater(self._n_live, max_active, out=self._n_flag)
        if bool(self._n_flag):
            return True
        np.dot(self._cur_row, self._ones_n, out=self._n_sum)
        np.greater(self._n_sum, total_ua, out=self._n_flag)
        return bool(self._n_flag)


def _params_block(
    pw: NDArray[np.float32], gap: NDArray[np.float32], rate: NDArray[np.float32]
) -> NDArray[np.float32] | None:
    """The [3, A, W] array whose rows are pw, gap and rate, if they are laid out so."""
    base = pw.base
    if not (
        isinstance(base, np.ndarray)
        and base.dtype == np.float32
        and base.shape == (3, *pw.shape)
        and base.flags.c_contiguous
    ):
        return None
    at = [a.__array_interface__["data"][0] for a in (pw, gap, rate)]
    rows = [base[i].__array_interface__["data"][0] for i in range(3)]
    if at != rows or not pw.shape == gap.shape == rate.shape:
        return None
    return base.reshape(3, -1)  # [3, A·W], the shape the product writes


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
