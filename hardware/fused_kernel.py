"""The mapping kernel's steady-state bin as two compiled loops (issue 17), when numba is present.

Why: `MappingKernel.run` as numpy calls costs ~30 calls × ~1 µs, and after an ONNX Runtime
step each call runs cold (29 µs repeated, 37 µs in the live loop), so mapping + safety cost
0.37–0.42 × the model step against a target of 0.3 ×. The work itself is a few thousand
multiply-adds. Here the same arithmetic runs as two loops compiled by numba, around one numpy
call for the logarithm:

1. `sample_and_prepare`: rates → validity check → clip → sparse sampling (ON rows, then OFF
   rows, each row's sum in the matrix's stored order) → normalised negated drive → the
   argument of the brightness curve's logarithm;
2. `np.log1p` (in the caller): numpy's own, because numba's `log1p` (libm) and numpy's
   (a SIMD implementation on AVX-512 machines) differ in the last bit on ~7 % of arguments,
   and the kernel's frames are bit-identical to the general path, which uses numpy's;
3. `finish`: current = threshold − scale·log, the comfort/charge ceiling, the on rule, the
   cheap test whether the simultaneous-electrode or total-current cap can bind, the enforcer's
   checks (disabled electrodes, its own ceiling, the deliverable floor), the float32 rounding
   bound, and the pulse parameters of every live electrode.

Every step is the numpy kernel's operation on one element, in the same order, with the same
float64/float32 types; numba compiles without fast-math, so nothing is reassociated or fused
into FMA. `tests/hardware/test_kernel.py` and the hypothesis properties run both forms against
the general path bit for bit. When a cap may bind, `finish` ranks and caps in the same order as
the numpy form's stable argsort (`cap_active_and_total`); when the bin carries a safety event
it returns `GENERAL` and the general path runs it, so refusals and events are exactly the
general path's.

Compiled when this module is imported (explicit signatures) and cached on disk (numba's
`cache=True`: beside this file, or in numba's user cache where that is not writable). Where
numba cannot load, `hardware.kernel` does not import this module and runs its numpy form.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from hardware.fused_layout import (
    AMP_BOUND,
    BMAX,
    CAPS,
    ENF_CEILING,
    EXTRA_DISABLED,
    GENERAL,
    NEG_MIN_DRIVE,
    S_CHECK_CEILING,
    S_CHECK_DISABLED,
    S_CHECK_LIVE,
    S_DIVIDE_BMAX,
    S_K,
    S_MIN_DELIV,
    S_MIN_DRIVE_POSITIVE,
    S_NEG_ALMOST_ONE,
    S_NEG_ONE,
    S_NEG_RATE_MAX,
    S_RATE_MAX,
    S_TOTAL_CANNOT_BIND,
    S_TOTAL_CAP,
    S_TOTAL_MARGIN,
    SCALE,
    SERVED,
    THR,
    TOP_B,
    TOP_CEIL,
)

__all__ = ["CAPS", "GENERAL", "SERVED", "enforce", "finish", "sample_and_prepare"]

_DBL_MAX = float(np.finfo(np.float64).max)


def _compile(*signatures: str) -> Any:
    """numba's nopython compilation for exactly these argument types, done when this module is
    imported (or loaded from numba's on-disk cache), so that no bin of a live run ever waits
    for a compiler; a call with other types raises TypeError instead of compiling (the kernel
    checks the rates' dtype before it calls). No fast-math (see module doc)."""

    def wrap(fn: Any) -> Any:
        return numba.njit(list(signatures), cache=True, nogil=True, error_model="numpy")(fn)

    return wrap


# Array types (numba's notation): [::1] C-contiguous buffers the kernel owns; [:, :] output
# fields, which may be rows of a frame ring's block (any layout).
def _prepare_args(index: str) -> str:
    return (
        f"f8[::1], u4[::1], {index}[::1], f8[::1], f8[::1], f8[:, ::1], f8[:, ::1], "
        "f8[:, :, ::1], f8[::1]"
    )


#: The outputs, as one tuple argument: amplitude, phase width, gap, rate, pulses (the frame
#: fields), the live mask, the pulse parameters (pw, gap, rate) and the pulse count.
_OUT = "Tuple((f4[:, :], f4[:, :], f4[:, :], f4[:, :], u2[:, :], f4[:, ::1], f4[::1], u2[::1]))"


# Column indices as uint16 where the rate field has ≤ 65,536 entries (the sparse structure is
# read from memory every bin, and after a model step it is no longer in cache), else uint32.
@_compile(
    *(
        f"b1({rates}[::1], {_prepare_args(index)})"
        for rates in ("f4", "f8")
        for index in ("u2", "u4")
    )
)
def sample_and_prepare(
    rates_in: Any,
    r: Any,
    indptr: Any,
    indices: Any,
    data: Any,
    both: Any,
    nd: Any,
    t: Any,
    consts: Any,
    scal: Any,
) -> bool:
    """Rates → `t` (the logarithm's argument) and `nd` (the negated drive). False: a bad rate."""
    rate_max = scal[S_RATE_MAX]
    n_in = r.shape[0]
    ok = True
    for i in range(n_in):
        x = np.float64(rates_in[i])
        # Not (finite and ≥ 0): NaN, ±inf, negatives; -0.0 is a valid 0, as in numpy's form.
        # Accumulated without a branch (the loop vectorises; 0.8 µs less per bin than an
        # early return), then checked once: nothing below runs on a bad field.
        ok &= bool((x >= 0.0) & (x <= _DBL_MAX))
        r[i] = x if x <= rate_max else rate_max
    if not ok:
        return False
    for i in range(both.shape[0]):
        # scipy's csr_matvec: add onto the zeroed output, in stored order. Unsigned indices:
        # numba then emits no negative-index wrap-around per load (2× faster, measured).
        s = 0.0
        for jj in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            s += data[jj] * r[indices[jj]]
        both[i] = s
    A, W = nd.shape
    N = A * W
    neg_rate_max = scal[S_NEG_RATE_MAX]
    neg_one = scal[S_NEG_ONE]
    neg_almost_one = scal[S_NEG_ALMOST_ONE]
    divide = scal[S_DIVIDE_BMAX] != 0.0
    for a in range(A):
        for w in range(W):
            on = both[a * W + w]
            off = both[N + a * W + w]
            d = on if on >= off else off
            d = d / neg_rate_max
            d = d if d >= neg_one else neg_one
            nd[a, w] = d
            v = d * consts[TOP_B, a, w]
            if divide:
                v = v / consts[BMAX, a, w]
            t[a, w] = v if v >= neg_almost_one else neg_almost_one
    return True


@_compile(f"i8(f8[:, ::1], f8[:, :, ::1], f8[::1], {_OUT})")
def enforce(cur: Any, consts: Any, scal: Any, out: Any) -> int:
    """The enforcer's work on a bin it would not intervene in (GENERAL if it would)."""
    amp, pw, gap, rate, pulses, live, params, n_pulses = out
    A, W = cur.shape
    check_disabled = scal[S_CHECK_DISABLED] != 0.0
    check_ceiling = scal[S_CHECK_CEILING] != 0.0
    check_live = scal[S_CHECK_LIVE] != 0.0
    min_deliv = scal[S_MIN_DELIV]
    for a in range(A):
        for w in range(W):
            c = cur[a, w]
            if check_disabled and c * consts[EXTRA_DISABLED, a, w] > 0.0:
                return GENERAL
            if check_ceiling and c > consts[ENF_CEILING, a, w]:
                return GENERAL
    pw32, gap32, rate32 = params[0], params[1], params[2]
    n16 = n_pulses[0]
    for a in range(A):
        for w in range(W):
            c = cur[a, w]
            if check_live:
                c = c * (1.0 if c >= min_deliv else 0.0)
                cur[a, w] = c
            bound = consts[AMP_BOUND, a, w]
            x = np.float32(c if c <= bound else bound)
            amp[a, w] = x
            s = np.float32(1.0) if x > 0 else np.float32(0.0)
            live[a, w] = s
            pw[a, w] = s * pw32
            gap[a, w] = s * gap32
            rate[a, w] = s * rate32
            pulses[a, w] = n16 if x > 0 else 0
    return SERVED


@_compile("void(f8[:, ::1], f8[:, ::1], f8[:, ::1], f8[::1], i8[::1], f8[::1])")
def cap_active_and_total(nd: Any, on_f: Any, cur: Any, scal: Any, order: Any, keys: Any) -> None:
    """Per array: keep the k strongest drives (ties: lower index first; off electrodes after
    every on one), then along that order drop every electrode whose cumulative current passes
    the total cap. The numpy form's stable argsort + take + cumulative sum + put, exactly:

    * the key is the numpy form's, −drive where on and ±0 (or 1, when the minimum drive is
      0) where off; the first k of a stable sort by key are found by insertion into a sorted
      list of k, an element going after every equal key already there (so index order
      breaks ties, as stability does);
    * the cumulative sum runs over the first k ranks in rank order, as `np.add.accumulate`.
    """
    A, W = cur.shape
    k = int(scal[S_K])
    positive = scal[S_MIN_DRIVE_POSITIVE] != 0.0
    apply_total = scal[S_TOTAL_CANNOT_BIND] == 0.0
    cap = scal[S_TOTAL_CAP]
    for a in range(A):
        m = 0  # entries in the sorted list
        for i in range(W):
            key = nd[a, i] * on_f[a, i]
            if not positive:
                key = key + (1.0 - on_f[a, i])
            if m == k and not key < keys[k - 1]:
                continue  # not before the k-th: a later index with an equal key never is
            j = m if m < k else k - 1
            while j > 0 and key < keys[j - 1]:
                keys[j] = keys[j - 1]
                order[j] = order[j - 1]
                j -= 1
            keys[j] = key
            order[j] = i
            if m < k:
                m += 1
        s = 0.0
        for j in range(m):
            c = cur[a, order[j]]
            if apply_total:
                s += c
                c = c * (1.0 if s <= cap else 0.0)
            keys[j] = c  # reuse: the kept currents in rank order
        for i in range(W):
            cur[a, i] = 0.0
        for j in range(m):
            cur[a, order[j]] = keys[j]


@_compile("b1(f8[:, ::1], f8[::1])")
def over_total_margin(cur: Any, scal: Any) -> bool:
    """Whether some array's total current is within reach of the enforcer's cap."""
    A, W = cur.shape
    margin = scal[S_TOTAL_MARGIN]
    for a in range(A):
        total = 0.0
        for w in range(W):
            total += cur[a, w]
        if total > margin:
            return True
    return False


@_compile(
    "i8(f8[:, ::1], f8[:, ::1], f8[:, ::1], f8[:, ::1], f8[:, :, ::1], f8[::1], i8[::1], f8[::1], "
    f"{_OUT})"
)
def finish(
    t: Any,
    nd: Any,
    on_f: Any,
    cur: Any,
    consts: Any,
    scal: Any,
    order: Any,
    keys: Any,
    out: Any,
) -> int:
    """`t` = log1p(argument) → the frame fields: SERVED or GENERAL, plus CAPS when the caps
    ran (module doc)."""
    A, W = t.shape
    k = scal[S_K]
    margin = scal[S_TOTAL_MARGIN]
    caps = False
    for a in range(A):
        n_on = 0.0
        total = 0.0
        for w in range(W):
            c = consts[THR, a, w] - consts[SCALE, a, w] * t[a, w]
            top = consts[TOP_CEIL, a, w]
            c = c if c <= top else top
            f = 1.0 if nd[a, w] <= consts[NEG_MIN_DRIVE, a, w] else 0.0
            c = c * f
            on_f[a, w] = f
            cur[a, w] = c
            n_on += f
            total += c
        if k == 0.0:
            for w in range(W):
                cur[a, w] = 0.0
        elif n_on > k or total > margin:
            caps = True
    if caps:
        cap_active_and_total(nd, on_f, cur, scal, order, keys)
        if scal[S_TOTAL_CANNOT_BIND] == 0.0 and over_total_margin(cur, scal):
            return GENERAL + CAPS
        return enforce(cur, consts, scal, out) + CAPS
    return enforce(cur, consts, scal, out)
