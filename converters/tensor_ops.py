"""Tensor-utility converters met in detector heads (anchor grids, DFL decoding): ``Tensor.to`` /
``type_as`` / ``float`` / ``float_cast`` (float16 float parts),
``clamp`` / ``clip``, ``torch.arange`` over static bounds and ``torch.roll`` (Swin's
cyclic window shift).

An engine has one device, so ``.to(device)`` passes the value through; ``.to(dtype)`` is an ICastLayer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, is_trt_tensor
from fx2trt_pipeline.converters.registry import method, register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import cast, concat, elementwise, identity
from fx2trt_pipeline.network.shape_builders import dims_of, normalize_dim, rank, sizes, slice_tensor
from fx2trt_pipeline.quantize.float16 import float_cast
from fx2trt_pipeline.trt_types import torch_dtype


def _input(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    return ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))


def _target_dtype(args: tuple, kwargs: dict) -> torch.dtype | None:
    """The dtype named by ``.to(...)`` arguments: a dtype, or a tensor's (other -> its dtype)."""
    for value in (*args[1:], kwargs.get("dtype")):
        if isinstance(value, torch.dtype):
            return value
        if isinstance(value, torch.Tensor):
            return value.dtype
        if is_trt_tensor(value):
            return torch_dtype(value.dtype)
    return None


@register(method("to"), method("type_as"))
def convert_to(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``x.to(dtype | device | other)`` / ``x.type_as(other)`` -> ICastLayer, or the value when no dtype changes."""
    value = arg(args, kwargs, 0, "input")
    dtype = _target_dtype(args, kwargs)
    if dtype is None:
        return value
    if dtype == torch.float64:
        dtype = torch.float32  # TensorRT has no float64 tensors; the network computes in float32
    return cast(ctx, ctx.name(node), ctx.as_tensor(value, ctx.name(node, "input")), dtype)


@register(float_cast)
def convert_float_cast(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``float_cast(x, dtype)`` (the network boundary of float16 float parts) -> ICastLayer of a float tensor."""
    value, dtype = arg(args, kwargs, 0, "x"), arg(args, kwargs, 1, "dtype")
    if not is_trt_tensor(value) or not torch_dtype(value.dtype).is_floating_point:
        return value
    return cast(ctx, ctx.name(node), value, dtype)


@register(method("float"))
def convert_float(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``x.float()`` -> ICastLayer to float32 (no layer when already float32)."""
    return cast(ctx, ctx.name(node), _input(ctx, node, args, kwargs), torch.float32)


@register(torch.clamp, torch.clip, method("clamp"), method("clip"))
def convert_clamp(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``clamp(x, min, max)`` with numbers or tensors -> elementwise MAX then MIN."""
    x = _input(ctx, node, args, kwargs)
    low, high = arg(args, kwargs, 1, "min", None), arg(args, kwargs, 2, "max", None)
    if low is None and high is None:
        raise ConversionError("clamp needs min or max")
    if low is not None:
        x = elementwise(ctx, ctx.name(node) if high is None else ctx.name(node, "min"), x, low, "max")
    if high is not None:
        x = elementwise(ctx, ctx.name(node), x, high, "min")
    return x


@register(torch.arange)
def convert_arange(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``torch.arange(start, end, step)`` over static bounds -> a constant (anchor grids of static feature maps)."""
    bounds = [arg(args, kwargs, i, n, None) for i, n in enumerate(("start", "end", "step"))]
    if any(is_trt_tensor(b) for b in bounds):
        raise ConversionError("torch.arange over a dynamic size is not supported; make that dim static")
    values = torch.arange(*[b for b in bounds if b is not None], dtype=kwargs.get("dtype"))
    return ctx.constant(values, ctx.name(node), torch.float32 if values.dtype == torch.float64 else None)


def _roll_dim(ctx: ConversionContext, name: str, x: ITensor, shift: int, dim: int) -> ITensor:
    """One ``torch.roll`` along a static dim: the last ``shift`` rows move to the front (two slices + concat)."""
    dim = normalize_dim(dim, rank(x), name)
    size = dims_of(x)[dim]
    if size < 0:
        raise ConversionError(f"{name}: torch.roll along the dynamic dim {dim} is not supported")
    shift %= max(size, 1)
    if shift == 0:
        return x
    full = sizes(ctx, ctx.name(name, "sizes"), x)

    def part(start: int, length: int, tag: str) -> ITensor:
        starts, lengths = [0] * rank(x), list(full)
        starts[dim], lengths[dim] = start, length
        return slice_tensor(ctx, ctx.name(name, tag), x, starts, lengths, [1] * rank(x))

    return concat(ctx, name, [part(size - shift, shift, "tail"), part(0, size - shift, "head")], dim)


@register(torch.roll, method("roll"))
def convert_roll(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``torch.roll(x, shifts, dims)`` along static dims -> slices + concatenation (Swin's cyclic shift)."""
    x = original = _input(ctx, node, args, kwargs)
    shifts, dims = arg(args, kwargs, 1, "shifts"), arg(args, kwargs, 2, "dims", None)
    if dims is None:
        raise ConversionError("torch.roll without dims (roll of the flattened tensor) is not supported")
    shifts = list(shifts) if isinstance(shifts, (list, tuple)) else [shifts]
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    name = ctx.name(node)
    for i, (shift, dim) in enumerate(zip(shifts, dims)):
        x = _roll_dim(ctx, name if i == len(dims) - 1 else ctx.name(name, f"dim{i}"), x, int(shift), int(dim))
    return x if x is not original else identity(ctx, name, x)
