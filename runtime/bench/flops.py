"""FLOPs per call of an ONNX model, counted from its Conv / MatMul / Gemm shapes.

Why count from the graph: the number is then the same for every runtime and precision of
one model, and the benchmark can put achieved GFLOP/s beside the machine's measured
matrix-multiply peak. Only multiply-accumulate ops are counted (2 FLOPs per MAC);
element-wise ops are cheap by comparison and left out (stated in the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FlopCount:
    total: int
    by_op: dict[str, int]
    n_nodes_counted: int


def _shapes(model: object) -> dict[str, tuple[int, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)  # type: ignore[arg-type]
    out: dict[str, tuple[int, ...]] = {}
    g = inferred.graph
    for v in list(g.input) + list(g.output) + list(g.value_info):
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[v.name] = tuple(int(d.dim_value) for d in dims)
    for init in g.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def count_flops(path: Path | str) -> FlopCount:
    """FLOPs of one call of the model at `path` (static shapes; unknown shapes are skipped)."""
    import onnx

    model = onnx.load(str(path))
    shapes = _shapes(model)
    by_op: dict[str, int] = {}
    counted = 0

    def add(op: str, n: int) -> None:
        nonlocal counted
        by_op[op] = by_op.get(op, 0) + int(n)
        counted += 1

    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w_name = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
            y_name = node.output[0]
            if w_name in shapes and y_name in shapes:
                w, y = shapes[w_name], shapes[y_name]
                # y: [N, C_out, *spatial]; w: [C_out, C_in/groups, *kernel]
                add("Conv", 2 * int(np.prod(y)) * int(np.prod(w[1:])))
        elif node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a_name = node.input[0]
            y_name = node.output[0]
            if a_name in shapes and y_name in shapes:
                k = shapes[a_name][-1]
                add("MatMul", 2 * int(np.prod(shapes[y_name])) * k)
        elif node.op_type == "Gemm":
            a_name, y_name = node.input[0], node.output[0]
            if a_name in shapes and y_name in shapes:
                trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
                a = shapes[a_name]
                k = a[0] if trans_a else a[-1]
                add("Gemm", 2 * int(np.prod(shapes[y_name])) * k)
        elif node.op_type in ("LSTM", "GRU"):
            x_name, w_name, r_name = node.input[0], node.input[1], node.input[2]
            if x_name in shapes and w_name in shapes and r_name in shapes:
                seq, batch = shapes[x_name][0], shapes[x_name][1]
                w, r = (
                    shapes[w_name],
                    shapes[r_name],
                )  # [dirs, gates*hidden, in], [dirs, gates*hidden, hidden]
                macs = seq * batch * (int(np.prod(w)) + int(np.prod(r)))
                add(node.op_type, 2 * macs)
    return FlopCount(sum(by_op.values()), by_op, counted)
