"""The float functional form of a graph of integer-arithmetic ops: what ONNX export traces.

:mod:`fx2trt_pipeline.quantize.int8_ops` computes conv / deconv / linear / matmul with TensorRT's integer
arithmetic; ONNX has no such op, so the exporter (and the float-path benchmark) first turns each of them back
into the torch.nn.functional op it computes, on the same dequantized operands::

    int8_conv2d(x_dq, w_dq, b, ..., input_scale=, weight_scale=)   ->  F.conv2d(x_dq, w_dq, b, ...)
    float16 graph:                                                 ->  float16(F.conv2d(x_dq32, w_dq32)) + b16

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> from fx2trt_pipeline.quantize import int8_ops
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    >>> x = torch.randn(1, 3, 8, 8)
    >>> qgm = ftp.quantize_model(model, [x], config=ftp.QuantConfig(show_progress=False))
    >>> fgm = float_path(qgm)
    >>> any(int8_ops.is_integer_op(n) for n in fgm.graph.nodes), torch.allclose(fgm(x), qgm(x), atol=1e-4)
    (False, True)
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.nn.functional as F

from fx2trt_pipeline.quantize import qdq_ops
from fx2trt_pipeline.quantize.int8_ops import FUNCTIONAL_OF, is_integer_op


def float_path(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of ``gm`` whose integer-arithmetic nodes call the plain float functional ops again.

    That is the simulation before integer arithmetic (a float32 conv on dequantized values) and
    what ONNX export traces: the functional op exports as Conv / Gemm between DequantizeLinear nodes.

    In a float16 graph (the op's input is float16) the float form states the simulated epilogue instead of
    a float16 op, which ONNX Runtime would sum in float16 on float16-rounded operands: the op reads float32
    dequantize outputs (``q * s``, exact in float32), has no bias, its float32 result is cast to float16
    and the float16 bias is added, i.e. ``float16(conv) + bias16`` against the simulated
    ``float16(float32(acc) * s_in * s_w) + bias16``: equal up to float32 summation order. A float16
    dequantize that feeds other layers too stays for them.

    Example:
        >>> gm = float_path(qgm)        # doctest: +SKIP
    """
    out = copy.deepcopy(gm)
    twins: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in list(out.graph.nodes):
        if is_integer_op(node):
            node.target, node.kwargs = FUNCTIONAL_OF[node.target], {}
            if _is_half(node.args[0]):
                _float32_form(out, node, twins)
    for replaced in twins:  # float16 dequantize nodes that fed integer ops only
        if not replaced.users and replaced.op == "call_function":
            out.graph.erase_node(replaced)
    out.graph.lint()
    out.recompile()
    return out


#: Spatial dims of each functional op's output after the channel dim (its bias broadcasts as ``(C, 1, ...)``).
_SPATIAL_DIMS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, F.conv_transpose1d: 1, F.conv_transpose2d: 2, F.linear: 0}


def _dequantize_dtype(node: torch.fx.Node) -> Any:
    if not qdq_ops.is_dequantize(node):
        return None
    return node.args[3] if len(node.args) > 3 else node.kwargs.get("out_dtype")


def _is_half(value: Any) -> bool:
    """A float16 operand: a float16 dequantize, or a node whose recorded value is float16."""
    if not isinstance(value, torch.fx.Node):
        return False
    if _dequantize_dtype(value) == torch.float16:
        return True
    meta = value.meta.get("val", value.meta.get("tensor_meta"))
    return getattr(meta, "dtype", None) == torch.float16


def _float32_operand(graph: torch.fx.Graph, value: Any, twins: dict[torch.fx.Node, torch.fx.Node]) -> Any:
    """``value`` in float32: its dequantize again without the round to float16 (exact), else a cast."""
    if not _is_half(value):
        return value
    if value not in twins:
        if _dequantize_dtype(value) == torch.float16:
            args, op, target = (*value.args[:3], None), "call_function", value.target
        else:
            args, op, target = (value, torch.float32), "call_method", "to"
        twins[value] = graph.create_node(op, target, args, name=f"{value.name}_float32")
    return twins[value]


def _float32_form(gm: torch.fx.GraphModule, node: torch.fx.Node, twins: dict[torch.fx.Node, torch.fx.Node]) -> None:
    """Rewrite the float op ``node`` in place as ``float16(op(float32 operands, no bias)) + bias16``."""
    graph = gm.graph
    matmul = node.target is torch.matmul
    with graph.inserting_before(node):
        operands = [_float32_operand(graph, a, twins) for a in node.args[:2]]
    bias = None if matmul else node.args[2]
    node.args = (*operands, *(() if matmul else (None,)), *node.args[3:])
    users = list(node.users)
    with graph.inserting_before(node.next):  # new nodes in creation order, right after the op
        y = graph.create_node("call_method", "to", (node, torch.float16), name=f"{node.name}_float16")
        if isinstance(bias, torch.fx.Node):
            broadcast = _broadcast_bias(gm, bias, _SPATIAL_DIMS[node.target])
            y = graph.create_node("call_function", operator.add, (y, broadcast), name=f"{node.name}_add_bias")
            if not bias.users:
                graph.erase_node(bias)
    for user in users:
        user.replace_input_with(node, y)


def _broadcast_bias(gm: torch.fx.GraphModule, bias: torch.fx.Node, spatial: int) -> torch.fx.Node:
    """``bias`` shaped ``(C, 1, ...)`` for a conv's output (``spatial`` dims after C): a new constant if it is one."""
    if not spatial:
        return bias
    shape = [-1] + [1] * spatial
    if bias.op == "get_attr":  # a reshaped constant: no Reshape node in the ONNX
        target = f"{str(bias.target).replace('.', '_')}_broadcast"
        gm.register_buffer(target, operator.attrgetter(str(bias.target))(gm).detach().reshape(shape))
        return gm.graph.get_attr(target)
    return gm.graph.call_method("reshape", (bias, shape))


__all__ = ["float_path"]
