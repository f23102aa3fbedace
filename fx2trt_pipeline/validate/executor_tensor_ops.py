"""Network-executor handlers for Q/DQ, elementwise, shape-manipulating and reduction layers.

Quantize / dequantize, constant, cast, identity, elementwise, unary, matrix multiply, shuffle,
concatenation, slice, gather, shape, select, reduce, softmax, top-k, einsum, squeeze, unsqueeze and
cumulative, each computed in torch with TensorRT's documented semantics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fx2trt_pipeline.validate.executor_common import (
    Inputs,
    axes_from_mask,
    dims,
    layer_handler,
    require,
    shape_values,
)
from fx2trt_pipeline.trt_types import torch_dtype

_FP8_MAX = 448.0  # largest finite float8 e4m3fn value; TensorRT saturates FP8 quantization to it


def _optional(inputs: Inputs, index: int) -> torch.Tensor | None:
    return inputs[index] if len(inputs) > index else None


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
    x, scale, zero_point = inputs[0], inputs[1], _optional(inputs, 2)
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
    q, scale, zero_point = inputs[0], inputs[1], _optional(inputs, 2)
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


def _permutation(value: Any, rank: int) -> list[int]:
    # TensorRT reports a Permutation with its maximum length; the first `rank` entries apply.
    return list(dims(value))[:rank]


@layer_handler("SHUFFLE", "IShuffleLayer")
def run_shuffle(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IShuffleLayer: first transpose, reshape (0 copies a dim when zero_is_placeholder, -1 infers),
    second transpose. The reshape dims come from input 1 (a shape tensor) or ``reshape_dims``."""
    x = inputs[0].permute(_permutation(layer.first_transpose, inputs[0].dim()))
    shape_input = _optional(inputs, 1)
    new = (
        shape_values(shape_input)
        if shape_input is not None
        else (dims(layer.reshape_dims) if layer.reshape_dims is not None else None)
    )
    if new is not None:
        if layer.zero_is_placeholder:
            new = tuple(x.shape[i] if d == 0 else d for i, d in enumerate(new))
        x = x.reshape(new)
    return x.permute(_permutation(layer.second_transpose, x.dim()))


@layer_handler("CONCATENATION", "IConcatenationLayer")
def run_concatenation(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IConcatenationLayer: ``torch.cat`` along ``axis``."""
    return torch.cat([t for t in inputs if t is not None], dim=int(layer.axis))


def _axes_tensor_or_attr(tensor: torch.Tensor | None, rank: int) -> list[int]:
    return [a % rank for a in shape_values(tensor)] if tensor is not None else []


@layer_handler("SQUEEZE", "ISqueezeLayer")
def run_squeeze(layer: Any, inputs: Inputs) -> torch.Tensor:
    """ISqueezeLayer: remove the size-1 dims listed by input 1."""
    x = inputs[0]
    axes = set(_axes_tensor_or_attr(_optional(inputs, 1), x.dim()))
    return x.reshape([d for i, d in enumerate(x.shape) if i not in axes])


@layer_handler("UNSQUEEZE", "IUnsqueezeLayer")
def run_unsqueeze(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IUnsqueezeLayer: insert size-1 dims at the output positions listed by input 1."""
    x = inputs[0]
    rank = x.dim() + _optional(inputs, 1).numel()
    axes = set(_axes_tensor_or_attr(_optional(inputs, 1), rank))
    sizes = iter(x.shape)
    return x.reshape([1 if i in axes else next(sizes) for i in range(rank)])


# ------------------------------------------------------------------------------------------ slice


def _slice_indices(
    mode: str, start: int, size: int, stride: int, extent: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source indices along one axis and, for FILL mode, the mask of in-bounds positions."""
    idx = start + torch.arange(size, device=device) * stride
    inside = (idx >= 0) & (idx < extent)
    if mode == "WRAP":
        return idx % extent, None
    if mode == "CLAMP":
        return idx.clamp(0, extent - 1), None
    if mode == "REFLECT":
        period = max(2 * (extent - 1), 1)
        idx = idx % period
        return torch.where(idx >= extent, period - idx, idx), None
    return idx.clamp(0, extent - 1), (inside if mode == "FILL" else None)


@layer_handler("SLICE", "ISliceLayer")
def run_slice(layer: Any, inputs: Inputs) -> torch.Tensor:
    """ISliceLayer: start/size/stride (static or from inputs 1-3) over all dims or ``axes``
    (input 5), with STRICT_BOUNDS, WRAP, CLAMP, FILL (value from input 4, else 0) and REFLECT."""
    x = inputs[0]

    def param(index: int, static: Any) -> tuple[int, ...]:
        t = _optional(inputs, index)
        return shape_values(t) if t is not None else dims(static)

    start, size, stride = param(1, layer.start), param(2, layer.shape), param(3, layer.stride)
    axes_input = _optional(inputs, 5)
    if axes_input is not None:
        axes: Sequence[int] = [a % x.dim() for a in shape_values(axes_input)]
    else:
        axes = [a % x.dim() for a in dims(layer.axes)] if layer.axes is not None else range(x.dim())
    mode = layer.mode.name
    out, fill_mask = x, None
    for axis, st, sz, sd in zip(axes, start, size, stride):
        idx, inside = _slice_indices(mode, st, sz, sd, x.shape[axis], x.device)
        if mode == "STRICT_BOUNDS" and sz > 0:
            last = st + (sz - 1) * sd
            require(
                0 <= st < x.shape[axis] and 0 <= last < x.shape[axis],
                layer,
                f"slice {st}:{last}:{sd} is out of bounds of dim {axis} (size {x.shape[axis]})",
            )
        out = out.index_select(axis, idx)
        if inside is not None:
            shape = [1] * x.dim()
            shape[axis] = -1
            mask = inside.reshape(shape)
            fill_mask = mask if fill_mask is None else fill_mask & mask
    if fill_mask is not None:
        value = _optional(inputs, 4)
        fill = (
            value.reshape(()).to(out.dtype)
            if value is not None
            else torch.zeros((), dtype=out.dtype, device=out.device)
        )
        out = torch.where(fill_mask, out, fill)
    return out


# ----------------------------------------------------------------------------------------- gather


@layer_handler("GATHER", "IGatherLayer")
def run_gather(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IGatherLayer: DEFAULT (with 0 or 1 element-wise dims), ELEMENT and ND; negative indices wrap."""
    data, indices = inputs[0], inputs[1].long()
    axis, mode, batch = int(layer.axis), layer.mode.name, int(layer.num_elementwise_dims)
    if mode == "ELEMENT":
        return torch.gather(data, axis, torch.where(indices < 0, indices + data.shape[axis], indices))
    if mode == "ND":
        return _gather_nd(data, indices, batch)
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    if batch == 0:
        return _gather_default(data, indices, axis)
    require(batch == 1, layer, f"num_elementwise_dims={batch} is not supported in DEFAULT mode")
    # The leading dim is shared by data and indices: gather each batch item separately.
    return torch.stack([_gather_default(data[b], indices[b], axis - 1) for b in range(data.shape[0])])


def _gather_default(data: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Gather: output dims are data[:axis] + indices + data[axis + 1:]."""
    picked = data.index_select(axis, indices.reshape(-1))
    return picked.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :])


def _gather_nd(data: torch.Tensor, indices: torch.Tensor, batch: int) -> torch.Tensor:
    """ONNX GatherND semantics with ``batch`` leading batch dims."""
    k = indices.shape[-1]
    batch_shape = data.shape[:batch]
    n = int(torch.tensor(batch_shape).prod()) if batch else 1
    flat_data = data.reshape(n, *data.shape[batch:])
    flat_idx = indices.reshape(n, -1, k)
    flat_idx = torch.where(
        flat_idx < 0, flat_idx + torch.tensor(data.shape[batch : batch + k], device=data.device), flat_idx
    )
    rows = torch.arange(n, device=data.device)[:, None].expand(n, flat_idx.shape[1])
    picked = flat_data[(rows, *flat_idx.unbind(-1))]
    return picked.reshape(*batch_shape, *indices.shape[batch:-1], *data.shape[batch + k :])


# ------------------------------------------------------------------------------------- reductions


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
    k_input = _optional(inputs, 1)
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
