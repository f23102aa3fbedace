"""Network-executor handlers for Q/DQ, elementwise, matrix and reduction layers.

Quantize / dequantize, constant, cast, identity, elementwise, unary, matrix multiply, shape, select,
reduce, softmax, top-k, einsum and cumulative, each computed in torch with TensorRT's documented
semantics. Layers that move or pick values (shuffle, concatenation, slice, gather, squeeze,
unsqueeze) are in ``executor_shape_ops.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fx2trt_pipeline.executor.executor_common import (
    Inputs,
    axes_from_mask,
    dims,
    layer_handler,
    optional_input,
    require,
    shape_values,
)
from fx2trt_pipeline.trt_types import torch_dtype

_FP8_MAX = 448.0  # largest finite float8 e4m3fn value; TensorRT saturates FP8 quantization to it


# ----------------------------------------------------------------------------------------- Q / DQ


def _broadcast_scale(layer: Any, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-tensor for a single-element scale, else per-channel along ``layer.axis``."""
    require(
        scale.dim() <= 1,
        layer,
        f"block quantization (scale of shape {tuple(scale.shape)}) is not supported by the network executor",
    )
    if scale.numel() == 1:
        return scale.reshape(())
    axis = int(layer.axis) % x.dim()
    require(
        x.shape[axis] == scale.numel(),
        layer,
        f"{scale.numel()} per-channel scales do not match dim {axis} of shape {tuple(x.shape)}",
    )
    shape = [1] * x.dim()
    shape[axis] = -1
    return scale.reshape(shape)


@layer_handler("QUANTIZE", "IQuantizeLayer")
def run_quantize(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IQuantizeLayer: ``clamp(round_half_even(x / scale) + zero_point, -128, 127)`` to int8 (or FP8)."""
    x, scale, zero_point = inputs[0], inputs[1], optional_input(inputs, 2)
    s = _broadcast_scale(layer, scale.float(), x)
    y = x.float() / s
    to = layer.to_type.name
    if to == "FP8":
        return y.clamp(-_FP8_MAX, _FP8_MAX).to(torch.float8_e4m3fn)
    require(to == "INT8", layer, f"quantize to DataType.{to} is not supported by the network executor")
    y = torch.round(y)  # torch.round is round-half-to-even, as TensorRT rounds
    if zero_point is not None:
        y = y + _broadcast_scale(layer, zero_point.float(), x)
    return y.clamp(-128, 127).to(torch.int8)


@layer_handler("DEQUANTIZE", "IDequantizeLayer")
def run_dequantize(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IDequantizeLayer: ``(q - zero_point) * scale`` in float32, per-tensor or per-channel."""
    q, scale, zero_point = inputs[0], inputs[1], optional_input(inputs, 2)
    y = q.float()
    if zero_point is not None:
        y = y - _broadcast_scale(layer, zero_point.float(), q)
    return (y * _broadcast_scale(layer, scale.float(), q)).to(torch_dtype(layer.to_type))


# -------------------------------------------------------------------------------- simple producers


@layer_handler("CONSTANT", "IConstantLayer")
def run_constant(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IConstantLayer: the weights reshaped to the layer's shape, in the layer's output dtype (on CPU)."""
    values = torch.from_numpy(layer.weights.copy())
    return values.reshape(dims(layer.shape)).to(torch_dtype(layer.get_output(0).dtype))


@layer_handler("SHAPE", "IShapeLayer")
def run_shape(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IShapeLayer: the input's dimensions as an int64 vector."""
    return torch.tensor(tuple(inputs[0].shape), dtype=torch.int64, device=inputs[0].device)


@layer_handler("CAST", "ICastLayer")
def run_cast(layer: Any, inputs: Inputs) -> torch.Tensor:
    """ICastLayer: ``x.to(to_type)`` (float to int truncates toward zero)."""
    return inputs[0].to(torch_dtype(layer.to_type))


@layer_handler("IDENTITY", "IIdentityLayer")
def run_identity(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IIdentityLayer: the input, converted to the output's declared dtype by the executor."""
    return inputs[0]


# ----------------------------------------------------------------------------------- elementwise


def _divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Integer DIV truncates toward zero in TensorRT (C semantics); floats divide exactly.
    return torch.div(a, b, rounding_mode=None if a.is_floating_point() else "trunc")


_ELEMENTWISE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "SUM": torch.add,
    "PROD": torch.mul,
    "MAX": torch.maximum,
    "MIN": torch.minimum,
    "SUB": torch.sub,
    "DIV": _divide,
    "POW": torch.pow,
    "FLOOR_DIV": lambda a, b: torch.div(a, b, rounding_mode="floor"),
    "AND": torch.logical_and,
    "OR": torch.logical_or,
    "XOR": torch.logical_xor,
    "EQUAL": torch.eq,
    "GREATER": torch.gt,
    "LESS": torch.lt,
}


@layer_handler("ELEMENTWISE", "IElementWiseLayer")
def run_elementwise(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IElementWiseLayer: every ElementWiseOperation, with size-1 broadcasting."""
    op = layer.op.name
    require(op in _ELEMENTWISE, layer, f"unsupported ElementWiseOperation.{op}")
    return _ELEMENTWISE[op](inputs[0], inputs[1])


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "EXP": torch.exp,
    "LOG": torch.log,
    "SQRT": torch.sqrt,
    "RECIP": torch.reciprocal,
    "ABS": torch.abs,
    "NEG": torch.neg,
    "SIN": torch.sin,
    "COS": torch.cos,
    "TAN": torch.tan,
    "SINH": torch.sinh,
    "COSH": torch.cosh,
    "ASIN": torch.asin,
    "ACOS": torch.acos,
    "ATAN": torch.atan,
    "ASINH": torch.asinh,
    "ACOSH": torch.acosh,
    "ATANH": torch.atanh,
    "CEIL": torch.ceil,
    "FLOOR": torch.floor,
    "ERF": torch.erf,
    "NOT": torch.logical_not,
    "SIGN": torch.sign,
    "ROUND": torch.round,
    "ISINF": torch.isinf,
    "ISNAN": torch.isnan,
}


@layer_handler("UNARY", "IUnaryLayer")
def run_unary(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IUnaryLayer: every UnaryOperation (ROUND is half-to-even)."""
    op = layer.op.name
    require(op in _UNARY, layer, f"unsupported UnaryOperation.{op}")
    return _UNARY[op](inputs[0])


@layer_handler("SELECT", "ISelectLayer")
def run_select(layer: Any, inputs: Inputs) -> torch.Tensor:
    """ISelectLayer: ``where(condition, then, else)`` with broadcasting."""
    return torch.where(inputs[0], inputs[1], inputs[2])


@layer_handler("MATRIX_MULTIPLY", "IMatrixMultiplyLayer")
def run_matrix_multiply(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IMatrixMultiplyLayer: NONE / TRANSPOSE (last two dims) / VECTOR operands, batch broadcasting."""
    a, b = inputs[0], inputs[1]
    op0, op1 = layer.op0.name, layer.op1.name
    a = a.transpose(-1, -2) if op0 == "TRANSPOSE" else (a.unsqueeze(-2) if op0 == "VECTOR" else a)
    b = b.transpose(-1, -2) if op1 == "TRANSPOSE" else (b.unsqueeze(-1) if op1 == "VECTOR" else b)
    out = torch.matmul(a, b)
    if op1 == "VECTOR":
        out = out.squeeze(-1)
    if op0 == "VECTOR":
        out = out.squeeze(-1 if op1 == "VECTOR" else -2)
    return out


@layer_handler("EINSUM", "IEinsumLayer")
def run_einsum(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IEinsumLayer: ``torch.einsum(equation, *inputs)``."""
    return torch.einsum(str(layer.equation), *[t for t in inputs if t is not None])


# ---------------------------------------------------------------------------------- shape changes


def _reduce_prod(x: torch.Tensor, axes: Sequence[int], keep: bool) -> torch.Tensor:
    for a in sorted(axes, reverse=True):  # torch.prod takes one dim at a time
        x = torch.prod(x, dim=a, keepdim=keep)
    return x


_REDUCE: dict[str, Callable[[torch.Tensor, Sequence[int], bool], torch.Tensor]] = {
    "SUM": lambda x, a, k: torch.sum(x, dim=tuple(a), keepdim=k),
    "AVG": lambda x, a, k: torch.mean(x, dim=tuple(a), keepdim=k),
    "MAX": lambda x, a, k: torch.amax(x, dim=tuple(a), keepdim=k),
    "MIN": lambda x, a, k: torch.amin(x, dim=tuple(a), keepdim=k),
    "PROD": _reduce_prod,
}


@layer_handler("REDUCE", "IReduceLayer")
def run_reduce(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IReduceLayer: SUM / PROD / MAX / MIN / AVG over the ``axes`` bitmask, ``keep_dims``."""
    op = layer.op.name
    require(op in _REDUCE, layer, f"unsupported ReduceOperation.{op}")
    x = inputs[0]
    axes = axes_from_mask(int(layer.axes), x.dim())
    return _REDUCE[op](x, axes, bool(layer.keep_dims)) if axes else x


@layer_handler("SOFTMAX", "ISoftMaxLayer")
def run_softmax(layer: Any, inputs: Inputs) -> torch.Tensor:
    """ISoftMaxLayer: softmax over the single axis set in the ``axes`` bitmask."""
    x = inputs[0]
    axes = axes_from_mask(int(layer.axes), x.dim())
    require(len(axes) == 1, layer, f"softmax axes bitmask {int(layer.axes):#b} must name exactly one axis")
    return torch.softmax(x.float(), dim=axes[0]).to(x.dtype)


@layer_handler("TOPK", "ITopKLayer")
def run_topk(layer: Any, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """ITopKLayer: values and indices of the k largest (MAX) or smallest (MIN) along one axis."""
    x = inputs[0]
    axes = axes_from_mask(int(layer.axes), x.dim())
    require(len(axes) == 1, layer, "top-k needs exactly one axis")
    k_input = optional_input(inputs, 1)
    k = shape_values(k_input)[0] if k_input is not None else int(layer.k)
    values, indices = torch.topk(x, k, dim=axes[0], largest=layer.op.name == "MAX", sorted=True)
    return values, indices.to(torch_dtype(layer.indices_type))


@layer_handler("CUMULATIVE", "ICumulativeLayer")
def run_cumulative(layer: Any, inputs: Inputs) -> torch.Tensor:
    """ICumulativeLayer: cumulative SUM along the axis of input 1 (``exclusive``, ``reverse``)."""
    require(layer.op.name == "SUM", layer, f"unsupported CumulativeOperation.{layer.op.name}")
    x = inputs[0]
    axis = shape_values(inputs[1])[0] % x.dim()
    y = x.flip(axis) if layer.reverse else x
    out = torch.cumsum(y, dim=axis)
    if layer.exclusive:
        out = out - y
    return out.flip(axis) if layer.reverse else out
