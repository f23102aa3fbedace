"""Shape converters: flatten / reshape / view / permute / transpose / squeeze / unsqueeze / chunk / split /
getitem / size / ``.shape`` / contiguous, with dynamic-batch support.

``size()`` yields Python ints for static dims and 0-d int64 shape tensors for dynamic ones, so code
such as ``x.view(x.size(0), -1)`` builds a shape tensor only when the batch is dynamic.
"""

from __future__ import annotations

import builtins
import math
import operator
from typing import Any

import torch
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, is_trt_tensor, node_arg
from fx2trt_pipeline.converters.registry import method, register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.shape_builders import (
    dim_size,
    dims_of,
    flatten,
    index_tensor,
    normalize_dim,
    permute,
    rank,
    reshape,
    sizes,
    slice_tensor,
    squeeze,
    unsqueeze,
)
from fx2trt_pipeline.network.tensor_builders import broadcast_to
from fx2trt_pipeline.trt_types import torch_dtype


def _input(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    return ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))


def _varargs(args: tuple, kwargs: dict, key: str) -> list[Any]:
    """Shape / dims given as ``f(x, a, b)`` or ``f(x, (a, b))`` or ``f(x, key=(a, b))``."""
    rest = list(args[1:]) if len(args) > 1 else [kwargs[key]]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    return rest


@register(torch.flatten, method("flatten"), nn.Flatten)
def convert_flatten(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``flatten(x, start_dim, end_dim)`` -> IShuffleLayer (shape tensor when outer dims are dynamic)."""
    if node.op == "call_module":
        module = ctx.module(node)
        start, end = module.start_dim, module.end_dim
    else:
        start, end = arg(args, kwargs, 1, "start_dim", 0), arg(args, kwargs, 2, "end_dim", -1)
    return flatten(ctx, ctx.name(node), _input(ctx, node, args, kwargs), int(start), int(end))


@register(torch.reshape, method("reshape"), method("view"))
def convert_reshape(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``reshape / view`` -> IShuffleLayer (static dims, or a shape tensor built from dynamic sizes)."""
    target = _varargs(args, kwargs, "shape")
    if any(isinstance(d, torch.dtype) for d in target):
        raise ConversionError("view(dtype) reinterprets bits and is not supported")
    return reshape(ctx, ctx.name(node), _input(ctx, node, args, kwargs), target)


@register(torch.permute, method("permute"))
def convert_permute(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``permute(dims)`` -> IShuffleLayer transpose."""
    return permute(
        ctx, ctx.name(node), _input(ctx, node, args, kwargs), [int(d) for d in _varargs(args, kwargs, "dims")]
    )


@register(torch.transpose, method("transpose"))
def convert_transpose(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``transpose(d0, d1)`` -> IShuffleLayer transpose."""
    x = _input(ctx, node, args, kwargs)
    d0 = normalize_dim(int(arg(args, kwargs, 1, "dim0")), rank(x), node.name)
    d1 = normalize_dim(int(arg(args, kwargs, 2, "dim1")), rank(x), node.name)
    perm = list(range(rank(x)))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return permute(ctx, ctx.name(node), x, perm)


@register(torch.squeeze, method("squeeze"))
def convert_squeeze(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``squeeze(dim=None)`` -> ISqueezeLayer over the static size-1 dims (others are left, as in torch)."""
    x = _input(ctx, node, args, kwargs)
    dim = arg(args, kwargs, 1, "dim", None)
    shape = dims_of(x)
    wanted = (
        range(rank(x))
        if dim is None
        else [normalize_dim(int(d), rank(x), node.name) for d in (dim if isinstance(dim, (list, tuple)) else [dim])]
    )
    if dim is None and any(d < 0 for d in shape):
        raise ConversionError("squeeze() without dim on a tensor with dynamic dims is ambiguous; pass dim")
    axes = [d for d in wanted if shape[d] == 1]
    if not axes:
        return x
    return squeeze(ctx, ctx.name(node), x, axes)


@register(torch.unsqueeze, method("unsqueeze"))
def convert_unsqueeze(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``unsqueeze(dim)`` -> IUnsqueezeLayer."""
    return unsqueeze(ctx, ctx.name(node), _input(ctx, node, args, kwargs), [int(arg(args, kwargs, 1, "dim"))])


def _split_lengths(node: Node, size: int, sections: Any, chunks: int | None) -> list[int]:
    if size < 0:
        raise ConversionError(f"{node.name}: cannot split a dynamic dim")
    if chunks is not None:
        step = math.ceil(size / chunks)
        sections = step
    if isinstance(sections, int):
        return [min(sections, size - start) for start in range(0, size, sections)] or [0]
    if sum(sections) != size:
        raise ConversionError(f"{node.name}: split sections {list(sections)} do not sum to {size}")
    return [int(s) for s in sections]


def _split(ctx: ConversionContext, node: Node, x: ITensor, lengths: list[int], dim: int) -> tuple[ITensor, ...]:
    dim = normalize_dim(dim, rank(x), node.name)
    full = sizes(ctx, ctx.name(node, "sizes"), x) if any(d < 0 for d in dims_of(x)) else list(dims_of(x))
    outputs, start = [], 0
    for i, length in enumerate(lengths):
        starts = [0] * rank(x)
        starts[dim] = start
        shape = list(full)
        shape[dim] = length
        outputs.append(slice_tensor(ctx, ctx.name(node, str(i)), x, starts, shape, [1] * rank(x)))
        start += length
    return tuple(outputs)


@register(torch.chunk, method("chunk"))
def convert_chunk(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> tuple[ITensor, ...]:
    """``chunk(chunks, dim)`` -> one ISliceLayer per chunk (torch's ceil-sized chunks)."""
    x = _input(ctx, node, args, kwargs)
    dim = int(arg(args, kwargs, 2, "dim", 0))
    size = dims_of(x)[normalize_dim(dim, rank(x), node.name)]
    return _split(ctx, node, x, _split_lengths(node, size, None, int(arg(args, kwargs, 1, "chunks"))), dim)


@register(torch.split, method("split"))
def convert_split(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> tuple[ITensor, ...]:
    """``split(size_or_sections, dim)`` -> one ISliceLayer per piece."""
    x = _input(ctx, node, args, kwargs)
    dim = int(arg(args, kwargs, 2, "dim", 0))
    sections = arg(args, kwargs, 1, "split_size_or_sections", None)
    if sections is None:
        sections = kwargs.get("split_size")
    size = dims_of(x)[normalize_dim(dim, rank(x), node.name)]
    return _split(ctx, node, x, _split_lengths(node, size, sections, None), dim)


@register(operator.getitem)
def convert_getitem(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``value[index]``: Python indexing of tuples / sizes, ISlice/ISqueeze/IUnsqueeze on tensors."""
    value, index = args[0], args[1]
    if is_trt_tensor(value):
        return index_tensor(ctx, ctx.name(node), value, index)
    if isinstance(value, torch.Tensor):
        return index_tensor(ctx, ctx.name(node), ctx.as_tensor(value, ctx.name(node, "input")), index)
    return value[index]


def _size(ctx: ConversionContext, node: Node, x: ITensor, dim: int | None) -> Any:
    if dim is not None:
        return dim_size(ctx, ctx.name(node), x, int(dim))
    return tuple(sizes(ctx, ctx.name(node), x))


@register(method("size"))
def convert_size(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``x.size(dim=None)`` -> ints for static dims, IShapeLayer + IGatherLayer for dynamic ones."""
    return _size(ctx, node, _input(ctx, node, args, kwargs), arg(args, kwargs, 1, "dim", None))


_ATTRIBUTES = ("shape", "ndim", "device", "dtype")


def check_getattr(node: Node) -> str | None:
    """Accept ``x.shape``, ``x.ndim``, ``x.device`` and ``x.dtype``."""
    name = node_arg(node, 1, "name")
    return None if name in _ATTRIBUTES else f"attribute {name!r} is not supported (only {', '.join(_ATTRIBUTES)})"


@register(builtins.getattr, can_convert=check_getattr)
def convert_getattr(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``x.shape`` (like ``x.size()``), ``x.ndim`` (an int), ``x.dtype`` and ``x.device`` (Python values)."""
    x = ctx.as_tensor(args[0], ctx.name(node, "input"))
    if args[1] == "device":  # an engine has one device: every tensor is "on" it and .to(device) is a no-op
        return torch.device("cpu")
    if args[1] == "dtype":
        return torch_dtype(x.dtype)
    return rank(x) if args[1] == "ndim" else _size(ctx, node, x, None)


@register(method("dim"), method("ndimension"))
def convert_dim(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> int:
    """``x.dim()``: the (static) rank as a Python int."""
    return rank(_input(ctx, node, args, kwargs))


@register(method("expand"))
def convert_expand(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``x.expand(*sizes)`` (``-1`` keeps a dim; dynamic sizes allowed) -> ISliceLayer with stride 0."""
    return broadcast_to(ctx, ctx.name(node), _input(ctx, node, args, kwargs), _varargs(args, kwargs, "size"))


@register(method("expand_as"))
def convert_expand_as(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``x.expand_as(other)`` -> ISliceLayer with stride 0 on the broadcast dims."""
    other = ctx.as_tensor(arg(args, kwargs, 1, "other"), ctx.name(node, "other"))
    return broadcast_to(ctx, ctx.name(node), _input(ctx, node, args, kwargs), sizes(ctx, ctx.name(node), other))


@register(method("contiguous"))
def convert_contiguous(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``x.contiguous()`` is a no-op in TensorRT: the value passes through without a layer."""
    return args[0]
