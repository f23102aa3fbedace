"""Deliberate errors in a QDQ ONNX model, for tests that parity checks catch them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(i for i in model.graph.initializer if i.name == name)


def _weight_dq(model: onnx.ModelProto, layer: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == f"{layer}_weight_int8")


def _activation_q(model: onnx.ModelProto, index: int) -> onnx.NodeProto:
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear"][index]


def scale_weight(model: onnx.ModelProto, layer: str, factor: float = 1.5) -> None:
    """Multiply one layer's per-channel weight scales by ``factor`` (a new initializer, others untouched)."""
    dq = _weight_dq(model, layer)
    scale = numpy_helper.to_array(_initializer(model, dq.input[1])) * np.float32(factor)
    model.graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), f"{layer}_tampered_scale"))
    dq.input[1] = f"{layer}_tampered_scale"


def wrong_axis(model: onnx.ModelProto, layer: str) -> None:
    """Put one layer's per-channel weight scales on axis 1 (needs a square C_out == C_in/groups kernel)."""
    for attr in _weight_dq(model, layer).attribute:
        if attr.name == "axis":
            attr.i = 1


def drop_qdq_pair(model: onnx.ModelProto, index: int) -> None:
    """Remove the ``index``-th activation QuantizeLinear and the DequantizeLinear nodes reading it."""
    q = _activation_q(model, index)
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]]
    for dq in dqs:
        for node in model.graph.node:
            node.input[:] = [q.input[0] if v == dq.output[0] else v for v in node.input]
        model.graph.node.remove(dq)
    model.graph.node.remove(q)


def scale_activation(model: onnx.ModelProto, index: int, factor: float = 2.0) -> None:
    """Multiply the scale of the ``index``-th activation Q (and its DQs) by ``factor``."""
    q = _activation_q(model, index)
    scale = numpy_helper.to_array(_initializer(model, q.input[1])) * np.float32(factor)
    name = f"{q.output[0]}_tampered_scale"
    model.graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), name))
    for node in model.graph.node:
        if node is q or (node.op_type == "DequantizeLinear" and node.input[0] == q.output[0]):
            node.input[1] = name


def tampered_copy(path: Path, out: Path, tamper, *args) -> Path:  # noqa: ANN001
    """``path`` with ``tamper(model, *args)`` applied, written to ``out`` (checked by onnx.checker)."""
    model = onnx.load(str(path))
    tamper(model, *args)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
