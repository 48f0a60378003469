"""The exported bundle as a whole: manifest content, ONNX metadata, CLI, failures, torch-free use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from export.cli import app
from export.exporter import ExportOptions, export_bundle
from export.source import ExportError, ExportSource
from runtime.bundle import MANIFEST_NAME, BundleManifest, load_bundle

runner = CliRunner()


def test_onnx_metadata_equals_the_manifest(streaming_bundle: Path) -> None:
    bundle = load_bundle(streaming_bundle)
    m = bundle.manifest
    for form in m.forms:
        model = onnx.load(str(streaming_bundle / form.file))
        meta = {p.key: p.value for p in model.metadata_props}
        expected = m.metadata_for(form)
        assert {k: meta[k] for k in expected} == expected
        assert float(meta["npe.frame_rate_hz"]) == m.timing.frame_rate_hz
        assert meta["npe.output_units"] == "spikes/s"
        assert int(meta["npe.output_n"]) == m.output.n
        assert meta["npe.input_hw"] == f"{m.input.height}x{m.input.width}"
        # static batch-1 shapes, one file, opset >= 18
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims[0] == 1 and all(d > 0 for d in dims)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
        assert not any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
        )


def test_manifest_describes_geometry_outputs_and_state(streaming_bundle: Path, kit: Any) -> None:
    m = load_bundle(streaming_bundle).manifest
    h, w = kit.FRAME_SHAPE
    assert m.input.field_of_view_deg == (w * kit.PIXEL_DEG, h * kit.PIXEL_DEG)
    assert (m.timing.frame_rate_hz, m.timing.window_frames) == (kit.RATE_HZ, kit.WINDOW)
    assert m.preprocessing.contrast_offset == 127.5 and m.preprocessing.clip == (-1.0, 1.0)
    assert m.model.kind == "ratemap" and m.model.stateful
    grid = m.output.grid
    assert grid is not None and grid.type_labels == ("ON", "OFF")
    assert m.output.n == 2 * len(grid.ys_deg) * len(grid.xs_deg)
    # C-order flattening: entry (type k, row i, col j) sits at (xs[j], ys[i]) with its polarity.
    pos, pol = m.output.positions_array(), m.output.polarity_array()
    nx = len(grid.xs_deg)
    assert tuple(pos[nx + 1]) == pytest.approx((grid.xs_deg[1], grid.ys_deg[1]))
    assert pol[0] == 1 and pol[-1] == -1
    assert grid.ys_deg[0] > 0 > grid.ys_deg[-1]  # y up: the first image row is at the top
    assert grid.xs_deg[0] < 0 < grid.xs_deg[-1]
    step = m.find_form("step")
    assert step is not None
    assert [s.output for s in step.state] == [f"{s.input}_next" for s in step.state]
    assert set(m.versions) >= {"torch", "onnx", "onnxruntime", "opset"}
    assert set(m.files) == {"model.onnx", "model.step.onnx"}


def test_inspect_verifies_and_prints_json(streaming_bundle: Path) -> None:
    res = runner.invoke(app, ["inspect", str(streaming_bundle), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["verified"] is True
    assert payload["manifest"]["model"]["name"] == "streaming"
    table = runner.invoke(app, ["inspect", str(streaming_bundle)])
    assert table.exit_code == 0 and "model.step.onnx" in table.stdout and "spikes/s" in table.stdout


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("missing", "missing file 'model.step.onnx'"),
        ("altered", "'model.step.onnx' was altered"),
        ("extra", "extra file(s) not listed in the manifest: model.int8.onnx"),
        ("version", "unknown schema version 7"),
        ("signature", "manifest inputs of 'model.step.onnx' do not match the model"),
        ("content", "manifest content was altered"),
    ],
)
def test_inspect_refuses_each_tampering_with_its_own_message(
    streaming_bundle: Path, tmp_path: Path, tamper: str, message: str
) -> None:
    b = tmp_path / "b"
    shutil.copytree(streaming_bundle, b)
    raw = json.loads((b / MANIFEST_NAME).read_text())
    if tamper == "missing":
        (b / "model.step.onnx").unlink()
    elif tamper == "altered":
        model = onnx.load(str(b / "model.step.onnx"))
        model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
        onnx.save(model, str(b / "model.step.onnx"))
    elif tamper == "extra":
        shutil.copy(b / "model.onnx", b / "model.int8.onnx")
    elif tamper == "version":
        raw["schema_version"] = 7
    elif tamper == "signature":
        step = next(f for f in raw["forms"] if f["form"] == "step")
        step["inputs"][1]["name"], step["inputs"][2]["name"] = "cache2", "cache1"
        step["state"][0]["input"], step["state"][1]["input"] = "cache2", "cache1"
        step["inputs"][1]["shape"], step["inputs"][2]["shape"] = (
            step["inputs"][2]["shape"],
            step["inputs"][1]["shape"],
        )
        step["state"][0]["shape"], step["state"][1]["shape"] = (
            step["inputs"][1]["shape"],
            step["inputs"][2]["shape"],
        )
        step["outputs"][1]["shape"], step["outputs"][2]["shape"] = (
            step["inputs"][1]["shape"],
            step["inputs"][2]["shape"],
        )
        # A forger who also re-seals the manifest digest: the model check still catches it.
        raw["manifest_sha256"] = BundleManifest.model_validate(raw).content_sha256()
    elif tamper == "content":
        raw["output"]["polarity"] = [-p for p in raw["output"]["polarity"]]
    (b / MANIFEST_NAME).write_text(json.dumps(raw))
    res = runner.invoke(app, ["inspect", str(b)])
    assert res.exit_code == 2
    assert "bundle refused" in res.output and message in res.output.replace("\n", "")


def test_bundle_runs_in_a_fresh_process_without_torch(streaming_bundle: Path, kit: Any) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        import numpy as np
        import onnxruntime as ort

        # 1) Only json, numpy and onnxruntime: read the manifest and run the step form.
        root = Path({str(streaming_bundle)!r})
        man = json.loads((root / "manifest.json").read_text())
        form = next(f for f in man["forms"] if f["form"] == "step")
        sess = ort.InferenceSession(str(root / form["file"]), providers=["CPUExecutionProvider"])
        frames = np.random.default_rng(5).uniform(-1, 1, (30, {kit.FRAME_SHAPE[0]}, {kit.FRAME_SHAPE[1]}))
        state = {{s["input"]: np.zeros(s["shape"], np.float32) for s in form["state"]}}
        out = []
        for f in frames.astype(np.float32):
            res = sess.run(None, {{"frame": f[None], **state}})
            out.append((res[0].ravel() * 1.0).tolist())
            state = {{s["input"]: v for s, v in zip(form["state"], res[1:])}}
        bare = sorted(m for m in ("torch", "pydantic", "onnx", "encoder", "export") if m in sys.modules)

        # 2) The runtime's verifier (stdlib, numpy, pydantic, onnx): still no torch.
        from runtime.bundle import load_bundle
        verified = load_bundle(root).verified
        print(json.dumps({{"bare_imports": bare, "verified": verified,
                          "torch": "torch" in sys.modules, "encoder": "encoder" in sys.modules,
                          "export": "export" in sys.modules, "rates": out}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bare_imports"] == []
    assert result["verified"] is True
    assert result["torch"] is False and result["encoder"] is False and result["export"] is False
    frames = np.random.default_rng(5).uniform(-1, 1, (30, *kit.FRAME_SHAPE)).astype(np.float32)
    model = kit.tiny_model("streaming")
    with torch.no_grad():
        ref = model.forward_sequence_maps(torch.from_numpy(frames)[None])[0].numpy() * kit.RATE_HZ
    np.testing.assert_allclose(np.array(result["rates"]), ref.reshape(30, -1), rtol=1e-4, atol=1e-4)


class _Drifting(torch.nn.Module):
    """A model that draws fresh noise on every call (as if its dropout were left on).

    Its ONNX Runtime output therefore cannot match PyTorch's: a real parity failure, not a mock.
    """

    stateful = False
    ratemap = False

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(6, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean(dim=(2, 3))
        return torch.nn.functional.softplus(y + 5.0 * torch.rand_like(y))


def test_export_fails_clearly_and_writes_nothing_when_parity_is_not_met(
    tmp_path: Path, kit: Any
) -> None:
    torch.manual_seed(0)
    source = ExportSource(
        model=_Drifting().eval(),
        model_name="drifting",
        frame_rate_hz=kit.RATE_HZ,
        window_frames=kit.WINDOW,
        frame_shape=kit.FRAME_SHAPE,
        pixel_size_deg=kit.PIXEL_DEG,
        cell_ids=("a", "b", "c"),
        cell_types=("ON", "OFF", "x"),
        cell_centers_deg=np.zeros((3, 2)),
    )
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match=r"parity not met, bundle not written: model.onnx"):
        export_bundle(source, out, ExportOptions())
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind


def test_cli_export_writes_bundle_and_json_and_refuses_bad_input(
    tmp_path: Path, recording_path: Path, kit: Any
) -> None:
    run = kit.make_checkpoint(tmp_path / "run", kit.tiny_model("deep-retina"), recording_path)
    out = tmp_path / "bundle"
    res = runner.invoke(app, ["export", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "bundle.export.json").read_text())
    assert report["files"] == load_bundle(out).manifest.files
    again = runner.invoke(app, ["export", str(run), "--out", str(out)])
    assert again.exit_code == 2 and "exists and is not empty" in again.output
    missing = runner.invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "no such checkpoint run directory" in missing.output
    no_cal = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "y"), "--int8"])
    assert no_cal.exit_code == 2 and "--calibration-data" in no_cal.output
