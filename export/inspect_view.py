"""Human view of a bundle manifest: rich tables of what the bundle is and how it verified."""

from __future__ import annotations

from collections import Counter

from rich.console import Group
from rich.table import Table

from runtime.bundle import Bundle


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def manifest_tables(bundle: Bundle) -> Group:
    """Summary, forms, files and parity tables of a loaded bundle."""
    m = bundle.manifest
    summary = Table(title=f"bundle {bundle.path}", show_header=False, title_justify="left")
    summary.add_column("field", style="bold")
    summary.add_column("value")
    status = (
        "[green]all hashes, signatures and metadata verified" if bundle.verified else "not verified"
    )
    rows = [
        ("schema", f"{m.schema_name} v{m.schema_version}"),
        ("status", status),
        (
            "model",
            f"{m.model.name} ({m.model.kind}, {'stateful' if m.model.stateful else 'stateless'}, "
            f"{m.model.n_parameters:,} parameters)",
        ),
        (
            "timing",
            f"{m.timing.frame_rate_hz:g} Hz, window {m.timing.window_frames} frames "
            f"({m.timing.window_ms:g} ms)",
        ),
        (
            "input",
            f"{m.input.height}x{m.input.width} px, {m.input.pixel_size_deg:g}°/px, field of view "
            f"{m.input.field_of_view_deg[0]:g}° x {m.input.field_of_view_deg[1]:g}°",
        ),
        (
            "preprocessing",
            f"{'grayscale, ' if m.preprocessing.grayscale else ''}"
            f"contrast = (L - {m.preprocessing.contrast_offset:g}) / {m.preprocessing.contrast_scale:g}, "
            f"clip [{m.preprocessing.clip[0]:g}, {m.preprocessing.clip[1]:g}]",
        ),
        ("output", f"{m.output.n} rates in {m.output.units}"),
    ]
    if m.output.grid is not None:
        g = m.output.grid
        rows.append(
            (
                "rate map",
                f"{len(g.type_labels)} types x {len(g.ys_deg)} x {len(g.xs_deg)}: "
                + ", ".join(g.type_labels),
            )
        )
    else:
        counts = Counter(m.output.types)
        rows.append(("cell types", ", ".join(f"{t} ({n})" for t, n in sorted(counts.items()))))
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items())))
    for k, v in rows:
        summary.add_row(k, v)

    forms = Table(title="forms", title_justify="left")
    for col in ("file", "form", "precision", "inputs", "outputs", "state", "ORT format"):
        forms.add_column(col)
    for f in m.forms:
        forms.add_row(
            f.file,
            f.form,
            f.precision,
            "\n".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in f.inputs),
            "\n".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in f.outputs),
            "\n".join(f"{s.input} → {s.output} (zeros)" for s in f.state) or "-",
            f.ort_file or "-",
        )

    files = Table(title="files (sha256)", title_justify="left")
    files.add_column("file")
    files.add_column("sha256")
    files.add_column("bytes", justify="right")
    for name, digest in sorted(m.files.items()):
        path = bundle.path / name
        size = f"{path.stat().st_size:,}" if path.is_file() else "missing"
        files.add_row(name, digest, size)

    par = Table(
        title=f"parity (ONNX Runtime vs PyTorch; onnx.checker: {m.parity.onnx_checker})",
        title_justify="left",
    )
    for col in (
        "file",
        "reference",
        "real",
        "random",
        "max abs err (spikes/s)",
        "max rel err",
        "correlation",
        "passed",
    ):
        par.add_column(col)
    for p in m.parity.forms:
        par.add_row(
            p.file,
            p.reference,
            str(p.n_real),
            str(p.n_random),
            _fmt(p.max_abs_err),
            _fmt(p.max_rel_err),
            f"{p.correlation:.8f}",
            "[green]yes" if p.passed else "[red]no",
        )
    parts: list[Table] = [summary, forms, files, par]
    q = m.parity.int8
    if q is not None:
        t8 = Table(title="INT8 (test split)", title_justify="left", show_header=False)
        t8.add_column("field", style="bold")
        t8.add_column("value")
        t8.add_row("file", q.file or "[red]not written (accuracy drop too large)")
        t8.add_row("calibration", f"{q.n_calibration_windows} windows from {q.calibration_source}")
        t8.add_row(
            "mean PCC",
            f"fp32 {q.mean_pcc_fp32:.4f} → int8 {q.mean_pcc_int8:.4f} "
            f"(drop {q.pcc_drop:+.4f}, allowed ≤ {q.max_pcc_drop})",
        )
        t8.add_row(
            "latency", f"fp32 {q.latency_ms_fp32:.3f} ms, int8 {q.latency_ms_int8:.3f} ms per call"
        )
        parts.append(t8)
    return Group(*parts)
