"""Typed layer builders shared by the converters: Q/DQ, elementwise, activations, pooling, reduce, resize.

Converters unpack FX node arguments and call these; each builder adds one or a few layers, names them
through :meth:`ConversionContext.name` and returns the output ITensor. Weighted layers (conv, deconv,
matmul, linear) and the int8 weight path live in :mod:`fx2trt_pipeline.network.weight_builders`, shape
work in :mod:`fx2trt_pipeline.network.shape_builders`.

Example:
    >>> from fx2trt_pipeline.network.layer_builders import ELEMENTWISE_OPS
    >>> {"add", "div", "floordiv"} <= set(ELEMENTWISE_OPS)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.shape_builders import dims_of, expand_rank, normalize_dim, rank
from fx2trt_pipeline.trt_types import torch_dtype

Operand = Union[ITensor, torch.Tensor, float, int, bool]

#: Our op names -> TensorRT ElementWiseOperation names.
ELEMENTWISE_OPS = {
    "add": "SUM",
    "sub": "SUB",
    "mul": "PROD",
    "div": "DIV",
    "floordiv": "FLOOR_DIV",
    "max": "MAX",
    "min": "MIN",
    "pow": "POW",
    "eq": "EQUAL",
}


# ---- quantize / dequantize ------------------------------------------------------------------------


def quantize(ctx: ConversionContext, name: str, x: ITensor, scale: ITensor, axis: int | None) -> ITensor:
    """IQuantizeLayer to int8 (round half to even, saturate); per channel on ``axis`` when given."""
    layer = ctx.network.add_quantize(x, scale, ctx.trt.int8)
    if layer is not None and axis is not None:
        layer.axis = normalize_dim(axis, rank(x), name)
    return ctx.add(layer, name, "quantize").get_output(0)


def dequantize(
    ctx: ConversionContext,
    name: str,
    q: ITensor,
    scale: ITensor,
    axis: int | None,
    dtype: torch.dtype = torch.float32,
) -> ITensor:
    """IDequantizeLayer to ``dtype`` (float32, or float16 for float16 float parts; the scale stays float32);
    per channel on ``axis`` when given."""
    layer = ctx.network.add_dequantize(q, scale, ctx.trt_dtype(dtype))
    if layer is not None and axis is not None:
        layer.axis = normalize_dim(axis, rank(q), name)
    return ctx.add(layer, name, "dequantize").get_output(0)


def scale_constant(ctx: ConversionContext, name: str, scale: torch.Tensor | float, axis: int | None) -> ITensor:
    """A Q/DQ scale as a build-time constant: 0-d for per-tensor, 1-d for per-channel."""
    tensor = torch.as_tensor(scale, dtype=torch.float32)
    if axis is None:
        if tensor.numel() != 1:
            raise ConversionError(f"{name}: per-tensor scale must hold one value, got shape {tuple(tensor.shape)}")
        if tensor.dim() == 0 and isinstance(scale, torch.Tensor):
            return ctx.as_tensor(scale, name, torch.float32)
        return ctx.constant(tensor.reshape(()), name)
    if tensor.dim() != 1:
        raise ConversionError(f"{name}: per-channel scale must be 1-d, got shape {tuple(tensor.shape)}")
    return ctx.as_tensor(scale if isinstance(scale, torch.Tensor) else tensor, name, torch.float32)


# ---- elementwise ----------------------------------------------------------------------------------


def cast(ctx: ConversionContext, name: str, x: ITensor, dtype: torch.dtype) -> ITensor:
    """ICastLayer to ``dtype`` (no layer when ``x`` already has it)."""
    trt_dtype = ctx.trt_dtype(dtype)
    if x.dtype == trt_dtype:
        return x
    return ctx.add(ctx.network.add_cast(x, trt_dtype), name, "cast").get_output(0)


def elementwise(ctx: ConversionContext, name: str, a: Operand, b: Operand, op: str) -> ITensor:
    """``a <op> b`` with numpy broadcasting; Python scalars become constants of the tensor's dtype.

    Ranks are matched by prepending size-1 dims (IUnsqueezeLayer) since TensorRT broadcasts only
    between equal ranks; mixed dtypes are promoted with an ICastLayer, as torch would.
    """
    if op not in ELEMENTWISE_OPS:
        raise ConversionError(f"{name}: unknown elementwise op {op!r}")
    tensors = [v for v in (a, b) if not isinstance(v, (int, float, bool))]
    if not tensors:
        raise ConversionError(f"{name}: elementwise {op} needs at least one tensor operand")
    dtypes = [
        torch_dtype(t.dtype)
        if not isinstance(t, torch.Tensor)
        else (torch.float32 if t.dtype == torch.float64 else t.dtype)
        for t in tensors
    ]
    if any(isinstance(v, float) for v in (a, b)) and not any(d.is_floating_point for d in dtypes):
        dtypes.append(torch.float32)  # int tensor * 0.5 is a float tensor in torch
    if op == "div" and not any(d.is_floating_point for d in dtypes):
        dtypes.append(torch.float32)  # true division of ints is float in torch
    dtype = functools.reduce(torch.promote_types, dtypes)  # torch's promotion; ctx.trt_dtype refuses what TRT lacks
    ranks = [rank(t) if not isinstance(t, torch.Tensor) else t.dim() for t in tensors]
    out_rank = max(ranks)
    operands = []
    for i, value in enumerate((a, b)):
        part = ctx.name(name, "lhs" if i == 0 else "rhs")
        if isinstance(value, (int, float, bool)):
            operands.append(ctx.constant(torch.full((1,) * out_rank, value, dtype=dtype), part, dtype))
            continue
        tensor = ctx.as_tensor(value, part)
        tensor = cast(ctx, part, tensor, dtype)
        operands.append(expand_rank(ctx, ctx.name(part, "rank"), tensor, out_rank))
    layer = ctx.network.add_elementwise(
        operands[0], operands[1], getattr(ctx.trt.ElementWiseOperation, ELEMENTWISE_OPS[op])
    )
    return ctx.add(layer, name, f"elementwise {op}").get_output(0)


# ---- activations ----------------------------------------------------------------------------------


def activation(
    ctx: ConversionContext,
    name: str,
    x: ITensor,
    kind: str,
    alpha: float | None = None,
    beta: float | None = None,
) -> ITensor:
    """IActivationLayer of ``ActivationType.<kind>`` with optional alpha / beta."""
    layer = ctx.network.add_activation(x, getattr(ctx.trt.ActivationType, kind))
    if layer is not None:
        if alpha is not None:
            layer.alpha = float(alpha)
        if beta is not None:
            layer.beta = float(beta)
    return ctx.add(layer, name, f"{kind.lower()} activation").get_output(0)


def gated(
    ctx: ConversionContext,
    name: str,
    x: ITensor,
    kind: str,
    alpha: float | None = None,
    beta: float | None = None,
) -> ITensor:
    """``x * act(x)`` (SiLU with SIGMOID, hardswish with HARD_SIGMOID): activation then product."""
    gate = activation(ctx, ctx.name(name, "gate"), x, kind, alpha, beta)
    return elementwise(ctx, name, x, gate, "mul")


def prelu(ctx: ConversionContext, name: str, x: ITensor, slope: Operand) -> ITensor:
    """IParametricReLULayer; a per-channel slope is broadcast along dim 1 as torch does."""
    if isinstance(slope, torch.Tensor):
        count = slope.numel()
        shape = [1] * rank(x)
        if count > 1:
            if rank(x) < 2:
                raise ConversionError(f"{name}: a {count}-channel PReLU needs an input with a channel dim")
            shape[1] = count
        slope_t = ctx.constant(slope.reshape(shape), ctx.name(name, "slope"), torch_dtype(x.dtype))
    else:
        slope_t = expand_rank(ctx, ctx.name(name, "slope_rank"), ctx.as_tensor(slope, ctx.name(name, "slope")), rank(x))
    return ctx.add(ctx.network.add_parametric_relu(x, slope_t), name, "parametric relu").get_output(0)


def softmax(ctx: ConversionContext, name: str, x: ITensor, dim: int) -> ITensor:
    """ISoftMaxLayer over one dim."""
    layer = ctx.network.add_softmax(x)
    if layer is not None:
        layer.axes = 1 << normalize_dim(dim, rank(x), name)
    return ctx.add(layer, name, "softmax").get_output(0)


def channel_affine(ctx: ConversionContext, name: str, x: ITensor, scale: torch.Tensor, shift: torch.Tensor) -> ITensor:
    """``x * scale + shift`` per channel (dim 1) as one IScaleLayer (unfused BatchNorm)."""
    if rank(x) < 2:
        raise ConversionError(f"{name}: per-channel scale needs an input with a channel dim (dim 1)")
    dtype = torch_dtype(x.dtype)  # strongly typed: the weights have the input's float type
    layer = ctx.network.add_scale_nd(
        x, ctx.trt.ScaleMode.CHANNEL, ctx.weights(shift, dtype), ctx.weights(scale, dtype), ctx.weights(None, dtype), 1
    )
    return ctx.add(layer, name, "scale").get_output(0)


# ---- pooling, reduce, resize, concat ----------------------------------------------------------------


@dataclass(frozen=True)
class PoolWindow:
    """Pooling geometry: window, stride, symmetric padding, rounding and average divisor."""

    kernel: Sequence[int]
    stride: Sequence[int]
    padding: Sequence[int]
    #: round the output size up (TensorRT EXPLICIT_ROUND_UP), torch's ``ceil_mode``.
    ceil_mode: bool = False
    #: average pooling divides by the valid elements only (torch ``count_include_pad=False``).
    exclude_padding: bool = False


def pooling(ctx: ConversionContext, name: str, x: ITensor, kind: str, window: PoolWindow) -> ITensor:
    """IPoolingLayer (``kind`` ``"MAX"`` or ``"AVERAGE"``) with explicit symmetric padding."""
    layer = ctx.network.add_pooling_nd(x, getattr(ctx.trt.PoolingType, kind), tuple(window.kernel))
    if layer is not None:
        layer.stride_nd = tuple(window.stride)
        layer.padding_nd = tuple(window.padding)
        layer.padding_mode = (
            ctx.trt.PaddingMode.EXPLICIT_ROUND_UP if window.ceil_mode else ctx.trt.PaddingMode.EXPLICIT_ROUND_DOWN
        )
        if kind == "AVERAGE":
            layer.average_count_excludes_padding = bool(window.exclude_padding)
    return ctx.add(layer, name, f"{kind.lower()} pooling").get_output(0)


def reduce(ctx: ConversionContext, name: str, x: ITensor, op: str, dims: Sequence[int], keepdim: bool) -> ITensor:
    """IReduceLayer (``op`` ``"AVG"`` / ``"SUM"`` / ``"MAX"``...) over ``dims``."""
    ndim = rank(x)
    axes = 0
    for d in dims:
        axes |= 1 << normalize_dim(d, ndim, name)
    layer = ctx.network.add_reduce(x, getattr(ctx.trt.ReduceOperation, op), axes, bool(keepdim))
    return ctx.add(layer, name, f"reduce {op.lower()}").get_output(0)


@dataclass(frozen=True)
class Interpolation:
    """torch ``interpolate`` sampling: ``mode`` ``"nearest"`` or ``"bilinear"``, and ``align_corners``."""

    mode: str
    align_corners: bool = False


def resize(
    ctx: ConversionContext,
    name: str,
    x: ITensor,
    interpolation: Interpolation,
    *,
    scales: Sequence[float] | None = None,
    shape: Any | None = None,
) -> ITensor:
    """IResizeLayer with torch's ``interpolate`` coordinate rules.

    Give either ``scales`` for every dim or ``shape`` (a tuple or a shape tensor).
    """
    layer = ctx.network.add_resize(x)
    if layer is not None:
        _set_interpolation(ctx.trt, layer, interpolation, name)
        if scales is not None:
            layer.scales = [float(s) for s in scales]
        elif isinstance(shape, (tuple, list)):
            layer.shape = tuple(int(d) for d in shape)
        elif shape is not None:
            layer.set_input(1, shape)
        else:
            raise ConversionError(f"{name}: resize needs scales or an output shape")
    return ctx.add(layer, name, "resize").get_output(0)


def _set_interpolation(trt: Any, layer: Any, interpolation: Interpolation, name: str) -> None:
    """torch's rules: nearest takes the floor of the asymmetric source coordinate; bilinear samples at
    half-pixel centres, or at the corners with ``align_corners``."""
    if interpolation.mode == "nearest":
        layer.resize_mode = trt.InterpolationMode.NEAREST
        layer.coordinate_transformation = trt.ResizeCoordinateTransformation.ASYMMETRIC
        layer.nearest_rounding = trt.ResizeRoundMode.FLOOR
    elif interpolation.mode == "bilinear":
        layer.resize_mode = trt.InterpolationMode.LINEAR
        layer.coordinate_transformation = (
            trt.ResizeCoordinateTransformation.ALIGN_CORNERS
            if interpolation.align_corners
            else trt.ResizeCoordinateTransformation.HALF_PIXEL
        )
        layer.selector_for_single_pixel = trt.ResizeSelector.FORMULA
    else:
        raise ConversionError(f"{name}: interpolation mode {interpolation.mode!r} is not supported")


def concat(ctx: ConversionContext, name: str, tensors: Sequence[ITensor], dim: int) -> ITensor:
    """IConcatenationLayer along ``dim``."""
    if not tensors:
        raise ConversionError(f"{name}: cat of an empty list")
    layer = ctx.network.add_concatenation(list(tensors))
    if layer is not None:
        layer.axis = normalize_dim(dim, rank(tensors[0]), name)
    return ctx.add(layer, name, "concatenation").get_output(0)


def identity(ctx: ConversionContext, name: str, x: ITensor) -> ITensor:
    """IIdentityLayer (used where a value must become a distinct tensor, e.g. a network output)."""
    return ctx.add(ctx.network.add_identity(x), name, "identity").get_output(0)


def static_spatial(x: ITensor, count: int, name: str) -> tuple[int, ...]:
    """The last ``count`` dims of ``x``, which must be static (pooling / resize arithmetic needs them)."""
    dims = dims_of(x)[-count:]
    if any(d < 0 for d in dims):
        raise ConversionError(f"{name}: needs static spatial dims, got {dims_of(x)}; make only the batch dynamic")
    return dims


def ints(value: int | Sequence[int], count: int) -> tuple[int, ...]:
    """``value`` repeated to ``count`` entries (torch's ``_pair`` / ``_single``)."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * count
    out = tuple(int(v) for v in value)
    return out * count if len(out) == 1 and count > 1 else out
