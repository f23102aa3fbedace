"""Typed builders for padding, broadcasting, layer normalization and attention, dynamic-shape safe.

Padding and broadcasting are one ISliceLayer each: padding starts before the tensor and reads past its
end with a sample mode (FILL / REFLECT / CLAMP / WRAP), broadcasting reads a size-1 dim with stride 0.
Sizes that are dynamic come in as 1-element int64 ITensors (see :mod:`shape_builders`) and become a
shape tensor on the slice's size input, so a dynamic batch never needs a rebuild.

Example:
    >>> from fx2trt_pipeline.network.tensor_builders import PAD_MODES, pad_extents
    >>> PAD_MODES["reflect"], pad_extents((1, 2, 3, 4), 4)
    ('REFLECT', [(0, 0), (0, 0), (3, 4), (1, 2)])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import elementwise, softmax
from fx2trt_pipeline.network.shape_builders import Dim, dim_size, dims_of, expand_rank, rank, shape_vector
from fx2trt_pipeline.network.weight_builders import matmul
from fx2trt_pipeline.trt_types import torch_dtype

#: torch ``F.pad`` modes -> TensorRT SampleMode names.
PAD_MODES = {"constant": "FILL", "reflect": "REFLECT", "replicate": "CLAMP", "circular": "WRAP"}


def pad_extents(pads: Sequence[int], ndim: int) -> list[tuple[int, int]]:
    """``(before, after)`` per dim from torch's pad list, which starts at the *last* dim."""
    if len(pads) % 2 or len(pads) // 2 > ndim:
        raise ConversionError(f"pad {list(pads)} needs an even length of at most {2 * ndim}")
    extents = [(0, 0)] * ndim
    for i in range(len(pads) // 2):
        extents[ndim - 1 - i] = (int(pads[2 * i]), int(pads[2 * i + 1]))
    return extents


def _grow(ctx: ConversionContext, name: str, size: Dim, extra: int) -> Dim:
    if extra == 0:
        return size
    if isinstance(size, int):
        return size + extra
    return elementwise(ctx, name, size, extra, "add")


def _slice(
    ctx: ConversionContext, name: str, x: ITensor, starts: Sequence[int], sizes: Sequence[Dim], strides: Sequence[int]
) -> Any:
    """An ISliceLayer (not yet named); the size goes to input 2 when any dim is dynamic."""
    static = all(isinstance(n, int) for n in sizes)
    layer = ctx.network.add_slice(x, tuple(starts), tuple(n if static else 1 for n in sizes), tuple(strides))
    if layer is not None and not static:
        layer.set_input(2, shape_vector(ctx, name, sizes))
    return layer


def pad(ctx: ConversionContext, name: str, x: ITensor, pads: Sequence[int], mode: str, value: float = 0.0) -> ITensor:
    """``F.pad(x, pads, mode, value)`` as one ISliceLayer (negative pads crop, as in torch)."""
    if mode not in PAD_MODES:
        raise ConversionError(f"{name}: pad mode {mode!r} is not supported ({', '.join(PAD_MODES)})")
    extents = pad_extents(pads, rank(x))
    starts, sizes = [], []
    for d, (before, after) in enumerate(extents):
        if mode != "constant" and (before or after) and dims_of(x)[d] < 0:
            raise ConversionError(f"{name}: {mode} padding of the dynamic dim {d} is not supported")
        starts.append(-before)
        sizes.append(_grow(ctx, ctx.name(name, f"size{d}"), dim_size(ctx, name, x, d), before + after))
    layer = _slice(ctx, name, x, starts, sizes, [1] * rank(x))
    if layer is not None:
        layer.mode = getattr(ctx.trt.SampleMode, PAD_MODES[mode])
        if mode == "constant":
            fill = np.array(value, dtype=torch.empty((), dtype=torch_dtype(x.dtype)).numpy().dtype)
            layer.set_input(4, ctx.constant(fill, ctx.name(name, "value")))
    return ctx.add(layer, name, "pad slice").get_output(0)


def broadcast_to(ctx: ConversionContext, name: str, x: ITensor, target: Sequence[Dim]) -> ITensor:
    """``x.expand(*target)``: ``-1`` keeps a dim; size-1 dims are read with stride 0 (one ISliceLayer)."""
    if len(target) < rank(x):
        raise ConversionError(f"{name}: expand to {len(target)} dims is fewer than the input's {rank(x)}")
    x = expand_rank(ctx, ctx.name(name, "rank"), x, len(target))
    shape = dims_of(x)
    sizes: list[Dim] = []
    strides: list[int] = []
    for d, want in enumerate(target):
        keep = isinstance(want, int) and want == -1
        sizes.append(dim_size(ctx, name, x, d) if keep else want)
        strides.append(0 if shape[d] == 1 and not keep else 1)
    return ctx.add(_slice(ctx, name, x, [0] * len(shape), sizes, strides), name, "expand slice").get_output(0)


def layer_norm(
    ctx: ConversionContext,
    name: str,
    x: ITensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> ITensor:
    """``F.layer_norm`` over the last ``len(normalized_shape)`` dims as one INormalizationLayer."""
    count, ndim = len(normalized_shape), rank(x)
    if count > ndim or tuple(dims_of(x)[ndim - count :]) != tuple(normalized_shape):
        raise ConversionError(f"{name}: normalized_shape {list(normalized_shape)} does not end {dims_of(x)}")
    shape = [1] * (ndim - count) + [int(s) for s in normalized_shape]
    weight = torch.ones(shape) if weight is None else weight.detach().reshape(shape)
    bias = torch.zeros(shape) if bias is None else bias.detach().reshape(shape)
    mask = sum(1 << d for d in range(ndim - count, ndim))
    dtype = torch_dtype(x.dtype)  # TensorRT wants scale and bias in the input's dtype (float16 networks)
    scale_t = ctx.constant(weight, ctx.name(name, "weight"), dtype)
    bias_t = ctx.constant(bias, ctx.name(name, "bias"), dtype)
    # tensorrt_rtx only: add_normalization_v2; datacenter TensorRT has add_normalization with the same arguments
    add = getattr(ctx.network, "add_normalization_v2", None) or ctx.network.add_normalization
    layer = add(x, scale_t, bias_t, mask)
    if layer is not None:
        layer.epsilon = float(eps)
    return ctx.add(layer, name, "normalization").get_output(0)


def attention(
    ctx: ConversionContext,
    name: str,
    qkv: tuple[ITensor, ITensor, ITensor],
    mask: ITensor | None = None,
    scale: float | None = None,
) -> ITensor:
    """``softmax(q @ k^T * scale + mask) @ v`` (scaled dot-product attention) as matmul + softmax layers.

    The two matrix multiplies stay separate layers so that Q/DQ placed on their inputs by the quantizer
    are visible to TensorRT's MHA fusion. ``mask`` is additive (float); converters turn boolean masks
    into ``0 / -inf`` first, as torch does.
    """
    q, k, v = qkv
    head_dim = dims_of(q)[-1]
    if scale is None:
        if head_dim < 0:
            raise ConversionError(f"{name}: the head dim of q must be static to derive the attention scale")
        scale = 1.0 / math.sqrt(head_dim)
    scores = matmul(ctx, ctx.name(name, "scores"), q, k, transpose_b=True)
    scores = elementwise(ctx, ctx.name(name, "scaled"), scores, float(scale), "mul")
    if mask is not None:
        scores = elementwise(ctx, ctx.name(name, "masked"), scores, mask, "add")
    probs = softmax(ctx, ctx.name(name, "softmax"), scores, -1)
    return matmul(ctx, name, probs, v)
