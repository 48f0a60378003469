"""The typed `npe bench` report (schema `npe.bench/2`), written and read with its own JSON.

Why typed: the report crosses into tables, the README's scripts (`benchmarks/latency/`) and
tests; read through string keys, a renamed field failed silently as a missing number. Every
reader now calls `BenchReport.model_validate_json` and uses attributes. Files written before
this schema (`npe.bench/1`, plain dicts) are not read by it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from hardware.delivery import DeliverySummary
from hardware.stimulator import StimulatorStatsSnapshot
from runtime.bench.witness import LateWake, StallAttribution, WakeReport
from runtime.latency import LatencyStats
from runtime.loop import RunSummary
from runtime.session import Pacing

BENCH_SCHEMA: Literal["npe.bench/2"] = "npe.bench/2"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Versions(_Model):
    python: str
    numpy: str
    onnxruntime: str
    opencv: str
    platform: str
    #: Which form ran the per-bin mapping, wire and audit work (hardware.compiled.describe).
    live_path_form: str = "numpy"


class MachineInfo(_Model):
    """The machine the figures came from (CPU flags that matter for ORT's kernels)."""

    cpu_model: str
    logical_cores: int | None
    cores_available: int
    machine: str
    flags: list[str]
    vnni: bool
    load_avg_1m: float | None
    versions: Versions


class InferenceStats(LatencyStats):
    """Per-call latency of one inference variant plus throughput and achieved FLOP rate."""

    runs: int
    throughput_per_s: float
    gflop_per_call: float | None = None
    gflops_achieved: float | None = None
    fraction_of_peak: float | None = None


class InferenceRow(_Model):
    """One way of running the model (ORT form/precision, or PyTorch eager), batch 1."""

    name: str
    settings: dict[str, str | int | float | bool]
    stats: InferenceStats
    flops: int
    file: str | None = None


class MatmulPeak(_Model):
    threads: int
    gflops: float
    size: int


class SweepRow(_Model):
    intra_op_threads: int
    allow_spinning: bool
    latency: LatencyStats


class WitnessResult(_Model):
    """Empty loops beside a paced run (`runtime.bench.witness`), and which stalls they saw."""

    per_core: list[WakeReport]
    late_events: list[LateWake]
    attribution: StallAttribution


class EndToEnd(_Model):
    """One end-to-end run of the live session: per-stage latencies and what was delivered.

    run: the loop's own summary (stages in `run.latency_ms`, counters, stalls);
    delivery: frames sent vs received, accepted, refused by reason, lost on the way.
    """

    pacing: Pacing
    form: str
    source: str
    stimulator_mode: str
    spin_us: float | None
    host_steal_s: float | None
    switch_interval_s: float | None
    run: RunSummary
    delivery: DeliverySummary
    stimulator: StimulatorStatsSnapshot | None
    witness: WitnessResult | None = None


class StageAllocations(_Model):
    """Net Python blocks one source area kept per bin (runtime files grouped by stage)."""

    stage: str
    net_blocks_per_bin: float


class AllocationReport(_Model):
    """Python allocations in the live loop's steady state (`runtime.bench.allocations`).

    method: how it was counted; bins/short_bins: the two traced passes whose difference
    cancels what a pass costs once; net_blocks_per_bin: blocks allocated and not freed, per
    bin; transient_peak_bytes: the most memory above the steady level during the long pass
    (temporaries allocated and freed inside a bin show only here).
    """

    method: str
    warmup_bins: int
    bins: int
    short_bins: int
    net_blocks_long: int
    net_blocks_short: int
    net_blocks_per_bin: float
    transient_peak_bytes: int
    by_stage: list[StageAllocations]
    top_files: dict[str, int]


class RatioTarget(_Model):
    ratio_p50: float
    target: float
    met: bool
    #: the step form's ratio too, shown beside the judged one (ORT vs PyTorch)
    ratio_p50_step: float | None = None

    def measured(self) -> str:
        return f"{self.ratio_p50:.1f}x (p50)"


class E2ETarget(_Model):
    p99_ms: float | None
    bins: int
    pacing: Pacing
    dropped: int
    dropped_counted_as: str
    bins_over_period: int
    target_p99_ms: float
    #: frames of the run the stimulator did not accept (lost or refused); None: unknown
    frames_not_accepted: int | None
    met: bool
    dropped_in_machine_stalls: int | None = None
    empty_loop_would_drop: int | None = None

    def measured(self) -> str:
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.2f}"
        return (
            f"p99 {p99} ms; {self.dropped} of {self.bins} ({self.dropped_counted_as}); "
            f"frames not accepted {self.frames_not_accepted}"
        )


class DeliveryTarget(_Model):
    """Frames not accepted in one run (lost + refused); `met` as the target states it."""

    run: Pacing
    sent: int
    accepted: int | None
    lost: int | None
    rejected: dict[str, int]
    accounted: bool
    met: bool

    def measured(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"{self.run}: {self.sent} sent, {self.accepted} accepted, {self.lost} lost, "
            f"refused: {reasons}; counts add up: {'yes' if self.accounted else 'NO'}"
        )


class AllocationTarget(_Model):
    net_blocks_per_bin: float
    bins: int
    met: bool

    def measured(self) -> str:
        return f"{self.net_blocks_per_bin:.4f} net blocks per bin over {self.bins} bins"


class LivePathTarget(_Model):
    """Issue 17's live-path targets from one end-to-end run: ratios of that run's stage p50s
    (the machine's speed at that moment cancels out); the p99 bound is absolute. Judged only
    as fast as possible, where no sleep hides a stage's cost."""

    map_vs_infer_p50: float
    total_vs_infer_p50: float
    total_p99_ms: float
    stage_p50_ms: dict[str, float]
    target_map_vs_infer: float
    target_total_vs_infer: float
    target_total_p99_ms: float
    judged_on: str
    met: bool

    def measured(self) -> str:
        return (
            f"mapping+safety {self.map_vs_infer_p50:.2f}x the model step "
            f"(≤ {self.target_map_vs_infer}), whole bin {self.total_vs_infer_p50:.2f}x "
            f"(≤ {self.target_total_vs_infer}), p99 {self.total_p99_ms:.2f} ms "
            f"(≤ {self.target_total_p99_ms}); {self.judged_on}"
        )


Target = RatioTarget | E2ETarget | DeliveryTarget | AllocationTarget | LivePathTarget


class Targets(_Model):
    """The issues' targets (None: not measured in this report).

    step_vs_window, ort_vs_torch, e2e: issue 5; live_path (mapping + safety and the whole
    bin against the model step), paced_zero_lost ("0 frames lost at the
    simulated stimulator in the paced run"), flood_losses_reported ("every loss reported in
    the flood run": the counts add up, whatever was lost) and allocations ("0 per bin in the
    steady state"): issue 17.
    """

    step_vs_window: RatioTarget | None = None
    ort_vs_torch: RatioTarget | None = None
    e2e: E2ETarget | None = None
    live_path: LivePathTarget | None = None
    paced_zero_lost: DeliveryTarget | None = None
    flood_losses_reported: DeliveryTarget | None = None
    allocations: AllocationTarget | None = None

    def measured(self) -> list[tuple[str, Target]]:
        """(name, target) of every target measured, in order."""
        out: list[tuple[str, Target]] = []
        for name in type(self).model_fields:
            t = getattr(self, name)
            if t is not None:
                out.append((name, t))
        return out


class BenchReport(_Model):
    """Everything one `npe bench` measured (bench.json)."""

    format: Literal["npe.bench/2"] = "npe.bench/2"
    model: str
    model_sha256: str
    bundle: str
    frame_rate_hz: float
    window_frames: int
    machine: MachineInfo
    session: dict[str, str | int | bool]
    scheduling: str
    switch_interval_s: float
    runs: int
    warmup: int
    inference: list[InferenceRow]
    matmul_peak: MatmulPeak
    sweep: list[SweepRow] = []
    #: the timed run: as fast as possible (flood) by default, paced with --realtime
    end_to_end: EndToEnd | None = None
    #: without --realtime: a short paced run after the flood, for its delivery (and latency)
    paced_check: EndToEnd | None = None
    allocations: AllocationReport | None = None
    targets: Targets = Targets()

    def e2e_runs(self) -> list[EndToEnd]:
        return [e for e in (self.end_to_end, self.paced_check) if e is not None]
