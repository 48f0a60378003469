"""Process settings for the real-time loop: GIL switch interval, frozen heap, RT priority.

Why: on a 2-core computer the loop competes with the camera reader, the status and preview
threads, the simulated stimulator and anything else running. Three knobs keep the per-bin
latency tail short:
- `sys.setswitchinterval(0.5 ms)`: with the default 5 ms a thread holding the GIL can delay
  the loop by half a bin;
- `gc.freeze()` after setup: full collections then only scan what the loop creates;
- optional SCHED_FIFO priority for the loop thread (`--rt-priority N`, Linux, needs root or
  CAP_SYS_NICE): the loop is not descheduled for other processes — what a prosthesis
  computer dedicated to the runtime would do. It is opt-in because a real-time thread that
  is overloaded can monopolise a core (Linux's RT throttling still leaves 5 %).
"""

from __future__ import annotations

import gc
import os
import sys

from runtime.errors import NpeRuntimeError


class RealtimeError(NpeRuntimeError, OSError):
    """A real-time setting the OS refused (named, with what to do instead)."""


def tune_interpreter(switch_interval_s: float = 0.0005) -> None:
    sys.setswitchinterval(switch_interval_s)


def freeze_heap() -> None:
    """Collect once, then move every object made so far out of the collector's reach."""
    gc.collect()
    gc.freeze()


def set_rt_priority(priority: int) -> str:
    """Give the calling thread SCHED_FIFO `priority` (1–99); returns a description."""
    if not 1 <= priority <= 99:
        raise RealtimeError(f"--rt-priority must be in 1..99, got {priority}")
    if not hasattr(os, "sched_setscheduler"):
        raise RealtimeError("--rt-priority: this OS has no SCHED_FIFO (Linux only)")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        raise RealtimeError(
            "--rt-priority: not permitted (needs root or CAP_SYS_NICE, e.g. "
            "`sudo setcap cap_sys_nice+ep $(readlink -f $(which python))`); run without it"
        ) from None
    return f"SCHED_FIFO priority {priority}"


def host_steal_s() -> float | None:
    """CPU time (s, all cores) the hypervisor gave to other guests since boot; None off Linux.

    Why: on a virtual machine a bin can stall for tens of ms with the loop thread runnable
    but no physical core under it. The steal counter of /proc/stat is the evidence that
    separates such stalls from the runtime's own work (recorded around every live session).
    """
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
