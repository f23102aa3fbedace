"""Quantize / dequantize converters: our ``torch.ops.fx2trt`` ops and torch.ao's graph flavour.

TensorRT's Q/DQ are symmetric int8 with a build-time constant scale (0-d per tensor, 1-d per channel
with ``axis``); every check below enforces that before conversion starts.
"""

from __future__ import annotations

from typing import Any

import torch
from fx2trt_pipeline.converters.common import arg, attr_value, is_constant, node_arg
from fx2trt_pipeline.converters.registry import method, register
from torch.fx import Node

from fx2trt_pipeline.network.context import ConversionContext, QuantizedTensor
from fx2trt_pipeline.network.layer_builders import dequantize, quantize, scale_constant
from fx2trt_pipeline.errors import ConversionError
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
    """``fx2trt.dequantize(q, scale, axis)`` -> IDequantizeLayer to float32 (int8 get_attr -> constant)."""
    q, scale, axis = (
        arg(args, kwargs, 0, "q"),
        arg(args, kwargs, 1, "scale"),
        arg(args, kwargs, 2, "axis", None),
    )
    s = scale_constant(ctx, ctx.name(node, "scale"), scale, axis)
    q_t = ctx.as_tensor(q, ctx.name(node, "int8"))
    if q_t.dtype != ctx.trt.int8:
        raise ConversionError(f"dequantize expects an int8 input, got {q_t.dtype}")
    return dequantize(ctx, ctx.name(node), q_t, s, axis)


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
