"""The compiled forms of the per-bin work (hardware.compiled): they load here, they agree with
the numpy forms, and they refuse what would make a loop without bounds checks read or write
outside its arrays."""

from __future__ import annotations

import numpy as np
import pytest

from hardware import compiled
from hardware.pipeline import StimulationPipeline
from hardware.safety import SafetyLimits
from hardware.types import RateField, StimulationFrame, count_active


def test_the_compiled_form_loads_and_is_reported():
    assert compiled.kernel_module(True) is not None, compiled.UNAVAILABLE
    assert compiled.codec_module() is not None, compiled.UNAVAILABLE
    assert compiled.describe().startswith("compiled (numba ")


def _frame(utah, rng) -> StimulationFrame:
    n = len(utah.electrode_ids)
    amp = rng.choice([0.0, -0.0, 5.0, np.nan, 30.0], n).astype(np.float32)
    pulses = rng.choice([0, 1, 4], n).astype(np.uint16)
    pw = np.where(pulses > 0, 170.0, 0.0).astype(np.float32)
    return StimulationFrame(1, 0, utah.electrode_ids, amp, pw, pw.copy(), pw.copy(), pulses)


@pytest.mark.parametrize("seed", range(5))
def test_count_active_equals_the_frames_active_mask(utah, seed, monkeypatch):
    frame = _frame(utah, np.random.default_rng(seed))
    want = int(np.count_nonzero(frame.active))
    assert count_active(frame) == want
    monkeypatch.setattr(compiled, "PREFER_COMPILED", False)
    assert count_active(frame) == want


def test_codec_refuses_fields_that_do_not_fit():
    codec = compiled.codec_module()
    assert codec is not None
    f4, u2 = np.zeros(4, np.float32), np.zeros(4, np.uint16)
    out = np.zeros(4 * 20, np.uint8)
    assert codec.audit_entries(f4, f4, f4, f4, u2, out, 0) == 0
    assert codec.audit_entries(f4, f4, f4, np.zeros(5, np.float32), u2, out, 0) == -1
    assert codec.audit_entries(f4, f4, f4, f4, u2, out, 1) == -1  # one byte short
    assert codec.wire_records(f4, f4, f4, f4, u2, np.zeros(4 * 18 - 1, np.uint8), 0) == -1


def test_kernel_sends_rates_of_another_length_to_the_general_path(utah):
    pipe = StimulationPipeline(utah, None, SafetyLimits())
    pos = pipe.model.phosphene_deg.astype(np.float32)
    field = RateField(np.full(96, 50.0, np.float32), pos, np.ones(96, np.int8))
    kernel = pipe.kernel_for(field)
    assert kernel.compiled
    assert kernel.run(field.rates_hz)
    assert not kernel.run(np.full(95, 50.0, np.float32))  # never read past the end
    assert not kernel.run(np.full(97, 50.0, np.float32))


def test_kernel_refuses_output_arrays_of_another_shape(utah):
    pipe = StimulationPipeline(utah, None, SafetyLimits())
    pos = pipe.model.phosphene_deg.astype(np.float32)
    kernel = pipe.kernel_for(RateField(np.zeros(96, np.float32), pos, np.ones(96, np.int8)))
    f4 = np.zeros((1, 96), np.float32)
    with pytest.raises(ValueError, match="n_pulses must be uint16"):
        kernel.set_outputs(f4, f4, f4, f4, np.zeros((1, 96), np.int64))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="amplitude_ua must be float32"):
        kernel.set_outputs(np.zeros((1, 95), np.float32), f4, f4, f4, np.zeros((1, 96), np.uint16))


def test_rate_field_refill_keeps_the_shape_check(utah):
    pos = np.zeros((10, 2), np.float32)
    field = RateField(np.zeros(10, np.float32), pos, np.ones(10, np.int8))
    new = np.ones(10, np.float32)
    field._refill(new, 42)
    assert field.rates_hz is new and field.timestamp_ns == 42
    with pytest.raises(ValueError, match=r"expected shape \[10\]"):
        field._refill(np.ones(11, np.float32), 43)
    assert field.rates_hz is new  # unchanged by the refusal


def test_without_numba_the_numpy_form_serves_the_same_frames(utah, monkeypatch):
    """A machine where numba cannot load (simulated: its import fails) runs the numpy form,
    says why, and maps to the same bits."""
    pos = np.random.default_rng(3).normal(0, 3, (2048, 2)).astype(np.float32)
    pol = np.random.default_rng(4).integers(-1, 2, 2048).astype(np.int8)
    rates = np.random.default_rng(5).gamma(1.0, 40.0, 2048).astype(np.float32)
    field = RateField(rates, pos, pol)
    want = StimulationPipeline(utah, None, SafetyLimits()).process(field)
    assert want.amplitude_ua.any()
    monkeypatch.setattr(compiled, "_modules", {})
    monkeypatch.setattr(compiled, "UNAVAILABLE", None)
    monkeypatch.setitem(__import__("sys").modules, "numba", None)  # import numba fails
    monkeypatch.delitem(__import__("sys").modules, "hardware.fused_kernel", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "hardware.fused_codec", raising=False)
    pipe = StimulationPipeline(utah, None, SafetyLimits())
    got = pipe.process(field)
    assert not pipe.kernel_for(field).compiled
    assert compiled.describe().startswith("numpy (numba unavailable: ModuleNotFoundError")
    for name in ("amplitude_ua", "phase_width_us", "interphase_gap_us", "pulse_rate_hz"):
        assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), name
    assert got.n_pulses.tobytes() == want.n_pulses.tobytes()


def test_npe_compiled_0_selects_the_numpy_form_in_a_new_process():
    """`NPE_COMPILED=0` (an A/B run, or a machine where numba misbehaves) runs the numpy form,
    and the report says so."""
    import os
    import subprocess
    import sys

    code = (
        "from hardware import compiled; print(compiled.describe()); "
        "print(compiled.kernel_module() is None, compiled.codec_module() is None)"
    )
    for value, want in (("0", "numpy (compiled form switched off"), ("1", "compiled (numba ")):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "NPE_COMPILED": value},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert out[0].startswith(want), out
        assert out[1] == ("True True" if value == "0" else "False False"), out


def test_frames_of_other_dtypes_take_the_numpy_form_with_the_same_bytes(utah, key):
    """A caller's frame with int64 pulses or float64 amplitudes is not `native`: the encoder
    casts it as `encode_frame` does, and the bytes are the same as for the native frame."""
    from hardware.wire import FrameEncoder

    native = _frame(utah, np.random.default_rng(9))
    other = StimulationFrame(
        native.sequence, native.timestamp_ns, native.electrode_ids,
        native.amplitude_ua.astype(np.float64), native.phase_width_us,
        native.interphase_gap_us, native.pulse_rate_hz, native.n_pulses.astype(np.int64),
    )  # fmt: skip
    assert native.native and not other.native
    a = FrameEncoder(key, clock_us=lambda: 1_000).encode(native)
    b = FrameEncoder(key, clock_us=lambda: 1_000).encode(other)
    assert a == b
    assert count_active(other) == count_active(native) == int(np.count_nonzero(native.active))
