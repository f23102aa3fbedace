"""Quantization error, layer by layer: how much error INT8 adds at each quantized layer.

:func:`quant_error_table` measures, for every layer with quantized inputs or weights, how much error
quantization adds: the layer alone (float input, INT8 layer vs FP32 layer), accumulated (INT8 model up to
the layer vs FP32 model at the same node) and the weight quantization error. It needs the BN-folded float
graph with the quantizer's node names (built from the float model here); values are captured by node name
with :func:`.layer_report.capture_node_values`.

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> from fx2trt_pipeline.validate.quant_error import quant_error_table
    >>> table = quant_error_table(model, qgm, (x,))
    >>> print(table)                                       # worst layers first  # doctest: +ELLIPSIS
    layer...
"""

from __future__ import annotations

import copy
import json
import math
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg

from fx2trt_pipeline.quantize import int8_ops, qdq_ops
from fx2trt_pipeline.validate.compare import (
    cosine_similarity,
    format_table,
    sqnr_db,
)
from fx2trt_pipeline.validate.layer_report import capture_node_values


@dataclass(frozen=True)
class LayerErrorRow:
    """Quantization error of one layer with quantized inputs or weights (SQNR in dB, cosine).

    ``activation_*``: the layer alone (float inputs quantized by its own Q/DQ, INT8 weights) vs the
    FP32 layer on the same float inputs. ``accumulated_*``: the INT8 model vs the FP32 model at this
    node. ``weight_*``: dequantized vs float (BN-folded) weight; ``None`` without a quantized weight.
    """

    layer: str
    op: str
    activation_sqnr_db: float
    activation_cosine: float
    accumulated_sqnr_db: float
    accumulated_cosine: float
    weight_sqnr_db: float | None = None
    weight_cosine: float | None = None


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class LayerErrorTable(list[LayerErrorRow]):
    """The rows of :func:`quant_error_table` in graph order; prints worst first."""

    def worst_first(self) -> list[LayerErrorRow]:
        """Rows by ascending layer-alone SQNR (the layer that adds the most error first)."""
        return sorted(self, key=lambda r: (r.activation_sqnr_db, r.accumulated_sqnr_db))

    def to_json(self, indent: int | None = 2) -> str:
        """Rows (graph order) as a JSON list; infinite SQNR is written as ``Infinity``."""
        return json.dumps([asdict(r) for r in self], indent=indent)

    def __str__(self) -> str:
        header = (
            "layer",
            "op",
            "alone SQNR dB",
            "alone cos",
            "accum SQNR dB",
            "accum cos",
            "weight SQNR dB",
            "weight cos",
        )
        rows = [
            (
                r.layer,
                r.op,
                _fmt(r.activation_sqnr_db, 2),
                _fmt(r.activation_cosine, 5),
                _fmt(r.accumulated_sqnr_db, 2),
                _fmt(r.accumulated_cosine, 5),
                _fmt(r.weight_sqnr_db, 2),
                _fmt(r.weight_cosine, 5),
            )
            for r in self.worst_first()
        ]
        return format_table(header, rows)


def float_reference_graph(
    model: torch.nn.Module,
    qgm: GraphModule,
    concrete_args: dict[str, Any] | None = None,
    example_inputs: Sequence[Any] | None = None,
) -> GraphModule:
    """The captured, BN-folded float graph of ``model`` with the quantizer's node names.

    Built on a copy of ``model`` (folding never touches the caller's model) with the leaf modules
    of the quantization config attached to ``qgm``, and the quantizer's capture rewrites (attention;
    Swin blocks, which need ``example_inputs``).
    """
    from fx2trt_pipeline.capture import capture
    from fx2trt_pipeline.capture.rewrites import rewrite_for_capture
    from fx2trt_pipeline.quantize.fold_bn import fold_batchnorm
    from fx2trt_pipeline.quantize.state import get_quant_state

    config = get_quant_state(qgm).config
    model = rewrite_for_capture(copy.deepcopy(model).eval(), example_inputs, config.leaf_modules)
    gm = capture(model, leaf_modules=config.leaf_modules, concrete_args=concrete_args)
    fold_batchnorm(gm)
    return gm


def _is_torch_ao_graph(gm: GraphModule) -> bool:
    return any(
        n.op == "call_function" and n.target in (torch.quantize_per_tensor, torch.quantize_per_channel)
        for n in gm.graph.nodes
    )


def _reference_module(module: torch.nn.Module) -> torch.nn.Module | None:
    """The torch.ao reference conv / linear in ``module`` (itself or the first of a fused pair)."""
    inner = module[0] if isinstance(module, torch.nn.Sequential) and len(module) else module
    return inner if hasattr(inner, "get_quantized_weight") else None


def torch_ao_float_twin(qgm: GraphModule) -> GraphModule:
    """The float graph of a torch.ao reference graph: same node names, Q/DQ removed, reference modules
    computing with their float (BN-folded) weights. Built on a copy; ``qgm`` is unchanged."""
    twin = copy.deepcopy(qgm)
    for node in list(twin.graph.nodes):
        if qdq_ops.is_any_quantize(node) or qdq_ops.is_any_dequantize(node):
            node.replace_all_uses_with(node.args[0])
            twin.graph.erase_node(node)
    for module in twin.modules():
        ref = _reference_module(module)
        if ref is not None:  # the reference module's forward fake-quantizes through get_weight()
            ref.get_weight = lambda ref=ref: ref.weight
    twin.graph.eliminate_dead_code()
    twin.recompile()
    return twin


def _reference_weight_error(module: torch.nn.Module) -> tuple[float | None, float | None]:
    ref = _reference_module(module)
    if ref is None or getattr(ref, "weight_qscheme", None) is None:
        return None, None
    with torch.no_grad():
        w, w_q = ref.weight.detach(), ref.get_weight().detach()
    return sqnr_db(w, w_q), cosine_similarity(w, w_q)


def _op_label(gm: GraphModule, node: Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    target = int8_ops.FUNCTIONAL_OF.get(node.target, node.target)  # an integer-arithmetic conv reads as conv2d
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _quantized_args(node: Node) -> tuple[list[Node], list[tuple[int, Node]]]:
    """Activation DQ inputs (DQ of a Q) and ``(arg position, weight DQ)`` inputs of ``node``."""
    acts, weights = [], []
    for pos, arg in enumerate(node.args):
        if isinstance(arg, Node) and qdq_ops.is_any_dequantize(arg):
            source = arg.args[0]
            if isinstance(source, Node) and qdq_ops.is_any_quantize(source):
                acts.append(arg)
            else:
                weights.append((pos, arg))
    for arg in node.all_input_nodes:  # list args, e.g. torch.cat([a_dq, b_dq])
        if qdq_ops.is_any_dequantize(arg) and arg not in acts and arg not in [w for _, w in weights]:
            source = arg.args[0]
            if isinstance(source, Node) and qdq_ops.is_any_quantize(source):
                acts.append(arg)
    return acts, weights


def _run_alone(qgm: GraphModule, node: Node, env: Mapping[str, torch.Tensor]) -> Any:
    """Execute one node of ``qgm`` with argument values from ``env`` (by node name)."""
    # Copies, so that an in-place node (operator.iadd, inplace ReLU) cannot change the shared values.
    args = map_arg(node.args, lambda n: env[n.name].clone())
    kwargs = map_arg(node.kwargs, lambda n: env[n.name].clone())
    if node.op == "call_module":
        return qgm.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


def _float_weight(
    float_gm: GraphModule, float_node: Node, position: int, float_values: Mapping[str, torch.Tensor]
) -> torch.Tensor | None:
    if float_node.op == "call_module":
        weight = getattr(float_gm.get_submodule(str(float_node.target)), "weight", None)
        return weight.detach() if isinstance(weight, torch.Tensor) else None
    arg = float_node.args[position] if position < len(float_node.args) else None
    return float_values.get(arg.name) if isinstance(arg, Node) else None


def quant_error_table(
    float_model: torch.nn.Module,
    qgm: GraphModule,
    inputs: Sequence[torch.Tensor],
    concrete_args: dict[str, Any] | None = None,
) -> LayerErrorTable:
    """Quantization error of every layer with quantized inputs or weights.

    Weights are compared with the BN-folded float weights the quantizer started from: a float model
    given as a GraphModule (e.g. from onnx2torch) is BN-folded here too (on a copy), so a conv's int8
    weights are not compared with its unfolded weights.

    Args:
        float_model: the float model that was quantized, or its float GraphModule with the quantizer's
            node names.
        qgm: the reference-quantized GraphModule.
        inputs: one batch of positional inputs.
        concrete_args: forwarded to tracing when ``float_model`` is not a GraphModule.

    Returns:
        A :class:`LayerErrorTable` (list of :class:`LayerErrorRow`, graph order) with ``to_json()``;
        ``print(table)`` shows the worst layers first.

    Example:
        >>> import torch, fx2trt_pipeline as ftp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
        >>> x = torch.randn(2, 3, 16, 16)
        >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
        >>> table = quant_error_table(model, qgm, (x,))
        >>> [row.layer for row in table.worst_first()], table[0].accumulated_sqnr_db > 20
        (['_0'], True)
    """
    float_gm = _folded_float_graph(float_model, qgm, concrete_args, inputs)
    float_values, _ = capture_node_values(float_gm, inputs)
    quant_values, _ = capture_node_values(qgm, inputs)
    ctx = _ErrorContext(float_gm, {n.name: n for n in float_gm.graph.nodes}, float_values, quant_values)
    rows = LayerErrorTable()
    for node in qgm.graph.nodes:
        if (
            node.op not in ("call_function", "call_module", "call_method")
            or qdq_ops.is_any_quantize(node)
            or qdq_ops.is_any_dequantize(node)
        ):
            continue
        acts, weights = _quantized_args(node)
        if (acts or weights) and node.name in float_values and node.name in quant_values:
            rows.append(_error_row(qgm, node, (acts, weights), ctx))
    return rows


def _folded_float_graph(
    float_model: torch.nn.Module, qgm: GraphModule, concrete_args: dict[str, Any] | None, inputs: Sequence[torch.Tensor]
) -> GraphModule:
    if not isinstance(float_model, GraphModule) and _is_torch_ao_graph(qgm):
        return torch_ao_float_twin(qgm)  # torch.ao graphs carry no quantization state: use the graph itself
    if not isinstance(float_model, GraphModule):
        return float_reference_graph(float_model, qgm, concrete_args, inputs)
    from fx2trt_pipeline.quantize.fold_bn import fold_batchnorm

    gm = copy.deepcopy(float_model).eval()
    fold_batchnorm(gm)  # a no-op on an already folded graph; node names are kept
    return gm


@dataclass
class _ErrorContext:
    """The float graph and both models' captured values, shared by every row."""

    float_gm: GraphModule
    float_nodes: dict[str, Node]
    float_values: dict[str, torch.Tensor]
    quant_values: dict[str, torch.Tensor]

    def base(self) -> ChainMap:
        # Inputs a layer sees when run alone: float values where the float model has the node (an
        # unquantized residual input, say), else the quantized graph's own values (biases, scales).
        return ChainMap(
            {k: v for k, v in self.float_values.items() if self.float_nodes[k].op != "get_attr"}, self.quant_values
        )


def _error_row(
    qgm: GraphModule, node: Node, quantized: tuple[list[Node], list[tuple[int, Node]]], ctx: _ErrorContext
) -> LayerErrorRow:
    acts, weights = quantized
    env: dict[str, torch.Tensor] = {}  # this layer's inputs, over the shared base values
    for dq in acts:  # the float input, through this layer's own Q/DQ
        q = dq.args[0]
        x = ctx.float_values.get(q.args[0].name, ctx.quant_values.get(q.args[0].name))
        # This layer's own Q then DQ nodes, run on the float value (any Q/DQ flavour: ours, torch.ao's).
        q_value = _run_alone(qgm, q, ChainMap({q.args[0].name: x}, ctx.base()))
        env[dq.name] = _run_alone(qgm, dq, ChainMap({q.name: q_value}, ctx.base()))
    for _, wdq in weights:
        env[wdq.name] = ctx.quant_values[wdq.name]
    with torch.no_grad():
        alone = _run_alone(qgm, node, ChainMap(env, ctx.base()))
    ref, accumulated = ctx.float_values[node.name], ctx.quant_values[node.name]
    w_sqnr = w_cos = None
    if not weights and node.op == "call_module":  # torch.ao reference modules quantize their own weight
        w_sqnr, w_cos = _reference_weight_error(qgm.get_submodule(str(node.target)))
    if weights and node.name in ctx.float_nodes:
        pos, wdq = weights[0]
        w_float = _float_weight(ctx.float_gm, ctx.float_nodes[node.name], pos, ctx.float_values)
        if w_float is not None and w_float.shape == ctx.quant_values[wdq.name].shape:
            w_sqnr = sqnr_db(w_float, ctx.quant_values[wdq.name])
            w_cos = cosine_similarity(w_float, ctx.quant_values[wdq.name])
    same = tuple(accumulated.shape) == tuple(ref.shape)
    return LayerErrorRow(
        node.name,
        _op_label(qgm, node),
        sqnr_db(ref, alone),
        cosine_similarity(ref, alone),
        sqnr_db(ref, accumulated) if same else math.nan,
        cosine_similarity(ref, accumulated) if same else math.nan,
        w_sqnr,
        w_cos,
    )
