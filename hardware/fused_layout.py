"""The layout shared by `hardware.kernel` and its compiled form `hardware.fused_kernel`.

Why a module of its own: the kernel lays out its constants before it knows whether the
compiled form will load, and importing `hardware.fused_kernel` loads numba and its compiled
functions (~0.3 s); this module imports nothing.
"""

from __future__ import annotations

SERVED = 0  #: the frame fields are written; nothing to report
GENERAL = 1  #: the bin carries a safety event: run the general path
CAPS = 2  #: flag added to either: the simultaneous-electrode / total-current caps ran

#: Rows of the constants block ([N_CONSTS, A, W] float64) `finish` and `sample_and_prepare` read.
TOP_B, BMAX, THR, SCALE, TOP_CEIL, NEG_MIN_DRIVE, EXTRA_DISABLED, ENF_CEILING, AMP_BOUND = range(9)
N_CONSTS = 9

#: Entries of the scalars vector (float64).
(
    S_RATE_MAX,
    S_NEG_RATE_MAX,
    S_NEG_ONE,
    S_NEG_ALMOST_ONE,
    S_DIVIDE_BMAX,
    S_K,
    S_TOTAL_MARGIN,
    S_CHECK_DISABLED,
    S_CHECK_CEILING,
    S_CHECK_LIVE,
    S_MIN_DELIV,
    S_TOTAL_CAP,
    S_TOTAL_CANNOT_BIND,
    S_MIN_DRIVE_POSITIVE,
) = range(14)
N_SCALARS = 14
