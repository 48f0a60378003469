"""ONNX Runtime inference for one form of a model, allocation-free per call.

Why IOBinding: input, outputs and recurrent state are bound once to preallocated arrays;
the state of a step form is double-buffered (two prebuilt bindings, A→B and B→A), so a
streaming model carries its state from bin to bin (ORT does not keep state hidden in
parameters, REFERENCES.md) and a call allocates nothing.

CPU session defaults follow REFERENCES.md "Runtime facts": 1–2 intra-op threads, sequential
execution, `session.intra_op.allow_spinning` measured (see `npe bench`), all graph
optimisations. CUDA is used only when asked, and refused with a clear error when this
onnxruntime build has no CUDA provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from runtime.errors import NpeRuntimeError
from runtime.spec import FormSpec

Device = Literal["cpu", "cuda"]


class InferenceError(NpeRuntimeError, RuntimeError):
    """A session that cannot be created or run as asked (device, shapes, file)."""


@dataclass(frozen=True)
class SessionSettings:
    """Thread and spinning settings of an ORT CPU session (recorded in benchmark JSON).

    Defaults: 1 intra-op thread with spinning off. On 2 cores the second core is busy with
    capture/preprocessing/the stimulator link, and spinning threads would steal it; `npe
    bench --sweep-threads` measures the alternatives on the machine at hand.
    """

    device: Device = "cpu"
    intra_op_threads: int = 1
    allow_spinning: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "device": self.device,
            "intra_op_threads": self.intra_op_threads,
            "allow_spinning": self.allow_spinning,
            "execution_mode": "sequential",
            "graph_optimization_level": "all",
        }


def make_session(path: str, settings: SessionSettings) -> ort.InferenceSession:
    """Create an ORT session for an ONNX file with the given settings."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
    )
    so.log_severity_level = 3
    if settings.device == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise InferenceError(
                "--device cuda: this onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif settings.device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise InferenceError(f"unknown device {settings.device!r}; use cpu or cuda")
    try:
        return ort.InferenceSession(path, sess_options=so, providers=providers)
    except Exception as exc:  # ORT raises its own exception types
        raise InferenceError(f"cannot load {path}: {exc}") from exc


class OrtEngine:
    """Runs one form (window or step) of a model; input, output and state live in fixed buffers.

    Two IOBindings are built once, with every tensor bound to a preallocated array: state A
    in → state B out, and B in → A out. A call copies the input into the bound input buffer
    and runs the binding whose state input holds the current state, then flips. Measured on
    the default bundle's step form this is ~20 % faster than `session.run` with a feed dict
    and ~40 % faster than rebinding every call.

    `run(x)` with x: window form [1, T, H, W] float32 (or [T, H, W]), step form [1, H, W]
    (or [H, W]); returns [n] float32, a view of the output buffer that is overwritten by the
    next call (copy it to keep it).
    """

    def __init__(self, form: FormSpec, settings: SessionSettings | None = None) -> None:
        self.form = form
        self.settings = settings or SessionSettings()
        self.session = make_session(str(form.path), self.settings)
        self.input = np.zeros(form.input_shape, dtype=np.float32)
        self.out = np.zeros(form.output_shape, dtype=np.float32)
        self._out_flat = self.out.reshape(-1)
        self._frame_view: NDArray[np.float32] | None = (
            self.input.reshape(self.input.shape[-2:]) if form.form == "step" else None
        )
        self._states = (
            [np.zeros(s.shape, dtype=np.float32) for s in form.states],
            [np.zeros(s.shape, dtype=np.float32) for s in form.states],
        )
        self._bindings = [self._bind(0, 1), self._bind(1, 0)] if form.states else [self._bind(0, 0)]
        self._current = 0  # index of the binding whose state input holds the current state
        self.calls = 0

    def _bind(self, src: int, dst: int) -> ort.IOBinding:
        b = self.session.io_binding()

        def bind_in(name: str, a: NDArray[np.float32]) -> None:
            b.bind_input(name, "cpu", 0, np.float32, list(a.shape), a.ctypes.data)

        def bind_out(name: str, a: NDArray[np.float32]) -> None:
            b.bind_output(name, "cpu", 0, np.float32, list(a.shape), a.ctypes.data)

        bind_in(self.form.input_name, self.input)
        bind_out(self.form.output_name, self.out)
        for s, a, nxt in zip(self.form.states, self._states[src], self._states[dst], strict=True):
            bind_in(s.input, a)
            bind_out(s.output, nxt)
        return b

    @property
    def stateful(self) -> bool:
        return bool(self.form.states)

    def reset_state(self) -> None:
        """Back to the initial (zero) state, e.g. after a camera reconnect."""
        for bufs in self._states:
            for a in bufs:
                a.fill(0.0)

    def frame_input(self) -> NDArray[np.float32]:
        """The step form's bound input as an [H, W] view. Whoever fills it (the live loop holds
        its frames in it) passes it to `run`, which then copies nothing."""
        if self._frame_view is None:
            raise InferenceError(f"{self.form.path.name}: only a step form has a frame input")
        return self._frame_view

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        if x.size != self.input.size:
            raise InferenceError(
                f"{self.form.path.name}: input {self.form.input_name} expects "
                f"{list(self.form.input_shape)}, got {list(x.shape)}"
            )
        if x is not self._frame_view:  # the bound input itself: already in place
            np.copyto(self.input, x.reshape(self.input.shape))
        self.session.run_with_iobinding(self._bindings[self._current])
        if self.form.states:
            self._current ^= 1
        self.calls += 1
        return self._out_flat
