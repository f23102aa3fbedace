"""Quantize / dequantize converters: our ``torch.ops.fx2trt`` ops, torch.ao's graph flavour and PT2E's
``torch.ops.quantized_decomposed`` ops.

TensorRT's Q/DQ are symmetric int8 with a build-time constant scale (0-d per tensor, 1-d per channel
with ``axis``); every check below enforces that before conversion starts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (defines torch.ops.quantized_decomposed, as torchao does)
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, attr_value, is_constant, node_arg
from fx2trt_pipeline.converters.registry import method, register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, QuantizedTensor
from fx2trt_pipeline.network.layer_builders import dequantize, quantize, scale_constant
from fx2trt_pipeline.network.weight_builders import dequantized_weight
from fx2trt_pipeline.quantize.qdq_ops import DEQUANTIZE, QUANTIZE

_AO_QUANTIZE = (torch.quantize_per_tensor, torch.quantize_per_channel)


def _scale_reason(scale: Any, axis: Any) -> str | None:
    if not is_constant(scale):
        return (
            f"the scale must be a build-time constant (a get_attr buffer), got node {scale} "
            f"({getattr(scale, 'op', type(scale).__name__)})"
        )
    if axis is not None and not isinstance(axis, int):
        return f"axis must be an int or None, got {axis!r}"
    value = attr_value(scale)
    if isinstance(value, torch.Tensor):
        if axis is None and value.numel() != 1:
            return f"per-tensor scale must hold one value, got shape {tuple(value.shape)}"
        if axis is not None and value.dim() != 1:
            return f"per-channel scale must be 1-d, got shape {tuple(value.shape)}"
        if not bool((value > 0).all()):
            return "TensorRT needs strictly positive scales"
    elif isinstance(value, (int, float)) and value <= 0:
        return "TensorRT needs strictly positive scales"
    return None


def check_fx2trt_qdq(node: Node) -> str | None:
    """Accept our Q/DQ ops when the scale is a constant of the right shape."""
    return _scale_reason(node_arg(node, 1, "scale"), node_arg(node, 2, "axis"))


@register(QUANTIZE, torch.ops.fx2trt.quantize, can_convert=check_fx2trt_qdq)
def convert_quantize(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``fx2trt.quantize(x, scale, axis)`` -> IQuantizeLayer to int8."""
    x, scale, axis = (
        arg(args, kwargs, 0, "x"),
        arg(args, kwargs, 1, "scale"),
        arg(args, kwargs, 2, "axis", None),
    )
    s = scale_constant(ctx, ctx.name(node, "scale"), scale, axis)
    return quantize(ctx, ctx.name(node), ctx.as_tensor(x, ctx.name(node, "input")), s, axis)


@register(DEQUANTIZE, torch.ops.fx2trt.dequantize, can_convert=check_fx2trt_qdq)
def convert_dequantize(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``fx2trt.dequantize(q, scale, axis, out_dtype)`` -> IDequantizeLayer to ``out_dtype`` (float32 default)."""
    q, scale, axis = (
        arg(args, kwargs, 0, "q"),
        arg(args, kwargs, 1, "scale"),
        arg(args, kwargs, 2, "axis", None),
    )
    out_dtype = arg(args, kwargs, 3, "out_dtype", None) or torch.float32
    s = scale_constant(ctx, ctx.name(node, "scale"), scale, axis)
    q_t = ctx.as_tensor(q, ctx.name(node, "int8"))
    if q_t.dtype != ctx.trt.int8:
        raise ConversionError(f"dequantize expects an int8 input, got {q_t.dtype}")
    return dequantize(ctx, ctx.name(node), q_t, s, axis, out_dtype)


def _zero_point_reason(zero_point: Any) -> str | None:
    if not is_constant(zero_point):
        return f"the zero point must be a build-time constant, got node {zero_point}"
    value = attr_value(zero_point)
    if bool(torch.as_tensor(value).ne(0).any()):
        return (
            "TensorRT quantization is symmetric: zero points must be 0 (use a symmetric qconfig, e.g. "
            "torch.ao's get_tensorrt_backend_config with qint8 per_tensor_symmetric activations)"
        )
    return None


def check_ao_quantize(node: Node) -> str | None:
    """Accept torch.quantize_per_tensor / per_channel with qint8, zero point 0 and constant scales."""
    per_channel = node.target is torch.quantize_per_channel
    scale = node_arg(node, 1, "scales" if per_channel else "scale")
    zero_point = node_arg(node, 2, "zero_points" if per_channel else "zero_point")
    axis = node_arg(node, 3, "axis") if per_channel else None
    dtype = node_arg(node, 4 if per_channel else 3, "dtype")
    if dtype != torch.qint8:
        return f"TensorRT quantizes to signed int8: dtype must be torch.qint8, got {dtype}"
    return _scale_reason(scale, axis) or _zero_point_reason(zero_point)


@register(*_AO_QUANTIZE, can_convert=check_ao_quantize)
def convert_ao_quantize(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> QuantizedTensor:
    """``torch.quantize_per_tensor / per_channel`` -> IQuantizeLayer (its scale goes to ``dequantize()``)."""
    per_channel = node.target is torch.quantize_per_channel
    x = arg(args, kwargs, 0, "input")
    scale = arg(args, kwargs, 1, "scales" if per_channel else "scale")
    axis = int(arg(args, kwargs, 3, "axis")) if per_channel else None
    s = scale_constant(ctx, ctx.name(node, "scale"), scale, axis)
    q = quantize(ctx, ctx.name(node), ctx.as_tensor(x, ctx.name(node, "input")), s, axis)
    return QuantizedTensor(q, s, axis)


def check_ao_dequantize(node: Node) -> str | None:
    """Accept ``.dequantize()`` of a tensor made by torch.quantize_per_tensor / per_channel."""
    source = node_arg(node, 0, "input")
    if isinstance(source, Node) and source.op == "call_function" and source.target in _AO_QUANTIZE:
        return None
    return (
        "dequantize() needs the output of torch.quantize_per_tensor / quantize_per_channel in the same "
        f"graph (its scale), got {source}"
    )


@register(method("dequantize"), torch.dequantize, can_convert=check_ao_dequantize)
def convert_ao_dequantize(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``x.dequantize()`` of a torch.ao quantized tensor -> IDequantizeLayer with the quantize scale."""
    value = arg(args, kwargs, 0, "input")
    if not isinstance(value, QuantizedTensor):
        raise ConversionError("dequantize() input is not a quantized tensor")
    return dequantize(ctx, ctx.name(node), value.tensor, value.scale, value.axis)


# ---- PT2E (torch.export + torchao convert_pt2e): torch.ops.quantized_decomposed ------------------------------

_QD = torch.ops.quantized_decomposed
_PT2E_QUANTIZE = (_QD.quantize_per_tensor.default, _QD.quantize_per_tensor.tensor, _QD.quantize_per_channel.default)
_PT2E_DEQUANTIZE = (
    _QD.dequantize_per_tensor.default,
    _QD.dequantize_per_tensor.tensor,
    _QD.dequantize_per_channel.default,
)
_PT2E_PER_CHANNEL = (_QD.quantize_per_channel.default, _QD.dequantize_per_channel.default)
_PT2E_REMEDY = (
    "TensorRT runs symmetric int8 only (zero point 0, activations saturating to [-128, 127]): quantize with "
    "fx2trt_pipeline.pt2e.TensorRTQuantizer instead of e.g. torchao's X86InductorQuantizer (asymmetric uint8)"
)


def _pt2e_args(node: Node, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Named arguments of a quantized_decomposed Q/DQ op (per-channel ops take an axis)."""
    names = ["input", "scale", "zero_point", "quant_min", "quant_max", "dtype"]
    if node.target in _PT2E_PER_CHANNEL:
        names.insert(3, "axis")
    out = {name: arg(args, kwargs, i, name, None) for i, name in enumerate(names)}
    out["axis"] = out.get("axis")
    return out


def check_pt2e_qdq(node: Node) -> str | None:
    """Accept PT2E Q/DQ that TensorRT can run: int8, zero point 0, constant positive scales, and on
    activations the full [-128, 127] range (TensorRT's Q saturates there)."""
    a = _pt2e_args(node, node.args, dict(node.kwargs))
    reason = _scale_reason(a["scale"], a["axis"])
    if reason is not None:
        return reason
    if node.kwargs.get("out_dtype") not in (None, torch.float32):
        return f"out_dtype {node.kwargs['out_dtype']} is not supported (float32 only)"
    problems = [] if a["dtype"] == torch.int8 else [f"dtype {a['dtype']} is not int8"]
    if is_constant(a["zero_point"]) and bool(torch.as_tensor(attr_value(a["zero_point"])).ne(0).any()):
        problems.append(f"zero point {attr_value(a['zero_point'])} is not 0")
    constant = is_constant(a["input"]) or (
        isinstance(a["input"], Node) and a["input"].target in _PT2E_QUANTIZE and is_constant(a["input"].args[0])
    )
    if not constant and (a["quant_min"], a["quant_max"]) != (-128, 127):
        problems.append(f"activation range [{a['quant_min']}, {a['quant_max']}] is not [-128, 127]")
    if not is_constant(a["zero_point"]):
        problems.append(f"the zero point must be a build-time constant, got node {a['zero_point']}")
    return f"{'; '.join(problems)}. {_PT2E_REMEDY}" if problems else None


@register(*_PT2E_QUANTIZE, can_convert=check_pt2e_qdq)
def convert_pt2e_quantize(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """quantized_decomposed.quantize_* -> IQuantizeLayer; on a constant weight, the op's own int8 values."""
    a = _pt2e_args(node, args, kwargs)
    if isinstance(a["input"], torch.Tensor):  # exactly what the PT2E model simulates: no re-rounding here
        return node.target(*args, **kwargs)
    s = scale_constant(ctx, ctx.name(node, "scale"), a["scale"], a["axis"])
    return quantize(ctx, ctx.name(node), ctx.as_tensor(a["input"], ctx.name(node, "input")), s, a["axis"])


@register(*_PT2E_DEQUANTIZE, can_convert=check_pt2e_qdq)
def convert_pt2e_dequantize(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """quantized_decomposed.dequantize_* -> IDequantizeLayer (int8 constants: the shared weight path)."""
    a = _pt2e_args(node, args, kwargs)
    if isinstance(a["input"], torch.Tensor):
        return dequantized_weight(ctx, ctx.name(node), a["input"], torch.as_tensor(a["scale"]), a["axis"])
    # convert_pt2e gives every consumer its own copy of a DQ; identical copies become one layer, as in
    # graphs from fx2trt_pipeline.quantize (one DQ per quantized tensor).
    twin = next(
        (
            u
            for u in node.args[0].users
            if u is not node
            and u in ctx.values
            and u.target is node.target
            and u.args[1:] == node.args[1:]
            and u.kwargs == node.kwargs
        ),
        None,
    )
    if twin is not None:
        return ctx.values[twin]
    s = scale_constant(ctx, ctx.name(node, "scale"), a["scale"], a["axis"])
    return dequantize(ctx, ctx.name(node), a["input"], s, a["axis"])
