"""Typed builders for weighted layers: the int8 weight path, convolution, deconvolution, matmul, linear.

The quantized weight path is shared by conv, deconv and matmul::

    int8 IConstantLayer --> IDequantizeLayer (per-channel axis) --> kernel input (set_input(1, ...))

A float kernel (layers kept in float) is passed as ``trt.Weights`` instead. 1-d convolutions run as 2-d
ones on a trailing size-1 dim because TensorRT convolution kernels are 2-d or 3-d.

Example:
    >>> from fx2trt_pipeline.network.weight_builders import same_padding
    >>> same_padding(kernel=(3, 4), dilation=(1, 1))
    ((1, 1), (1, 2))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch

from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import dequantize, elementwise, scale_constant
from fx2trt_pipeline.network.shape_builders import dims_of, expand_rank, rank, squeeze, unsqueeze
from fx2trt_pipeline.trt_types import torch_dtype

Kernel = Union[ITensor, torch.Tensor]


def dequantized_weight(
    ctx: ConversionContext, name: str, weight_int8: torch.Tensor, scale: torch.Tensor, axis: int | None
) -> ITensor:
    """The shared weight path: int8 constant -> IDequantizeLayer (per channel on ``axis``).

    Layers: ``<name>.int8`` (constant), ``<name>.scale`` (constant), ``<name>`` (dequantize).
    """
    if weight_int8.dtype != torch.int8:
        raise ConversionError(f"{name}: quantized weights must be int8, got {weight_int8.dtype}")
    q = ctx.as_tensor(weight_int8, ctx.name(name, "int8"))
    s = scale_constant(ctx, ctx.name(name, "scale"), scale, axis)
    return dequantize(ctx, name, q, s, axis)


def same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(pre, post) padding of torch's ``padding="same"``: the odd extra element goes at the end."""
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)


def _kernel_shape(kernel: Kernel) -> tuple[int, ...]:
    return tuple(kernel.shape) if isinstance(kernel, torch.Tensor) else dims_of(kernel)


def _lift_1d(ctx: ConversionContext, name: str, kernel: Kernel) -> Kernel:
    if isinstance(kernel, torch.Tensor):
        return kernel.unsqueeze(-1)
    return unsqueeze(ctx, ctx.name(name, "kernel_2d"), kernel, [rank(kernel)])


@dataclass(frozen=True)
class ConvGeometry:
    """torch's convolution arguments besides input, weight and bias."""

    stride: Sequence[int]
    #: ints, or ``"same"`` / ``"valid"`` (convolution only).
    padding: Sequence[int] | str
    dilation: Sequence[int]
    groups: int = 1
    transposed: bool = False
    #: deconvolution only: extra output rows/cols at the end.
    output_padding: Sequence[int] = ()


@dataclass(frozen=True)
class _Window:
    """Resolved per-dim kernel window: sizes, stride, dilation, padding before and after."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pre: tuple[int, ...]
    post: tuple[int, ...]

    def lifted(self) -> _Window:
        """The same window with a trailing size-1 dim (a 1-d conv run as a 2-d one)."""
        return _Window(*(values + (extra,) for values, extra in zip(dataclasses.astuple(self), (1, 1, 1, 0, 0))))


def _window(name: str, kshape: tuple[int, ...], geometry: ConvGeometry) -> _Window:
    """Resolve torch's padding rules (ints, "same", "valid", deconvolution output_padding)."""
    spatial = len(kshape) - 2
    k, padding = tuple(kshape[2:]), geometry.padding
    if isinstance(padding, str):
        if padding == "valid":
            pre, post = (0,) * spatial, (0,) * spatial
        elif padding == "same" and not geometry.transposed:
            pre, post = same_padding(k, geometry.dilation)
        else:
            raise ConversionError(f"{name}: padding={padding!r} is not supported here")
    else:
        pre, post = tuple(padding), tuple(padding)
    if geometry.transposed:
        out_pad = tuple(geometry.output_padding) or (0,) * spatial
        post = tuple(p - op for p, op in zip(post, out_pad))
        if any(p < 0 for p in post):
            raise ConversionError(
                f"{name}: output_padding {list(out_pad)} larger than padding {list(padding)} "
                "is not supported by the deconvolution converter"
            )
    return _Window(k, tuple(geometry.stride), tuple(geometry.dilation), tuple(pre), tuple(post))


def conv_nd(
    ctx: ConversionContext, name: str, x: ITensor, kernel: Kernel, bias: Kernel | None, geometry: ConvGeometry
) -> ITensor:
    """IConvolutionLayer / IDeconvolutionLayer with torch's weight layouts and padding rules.

    Args:
        kernel: an ITensor (the dequantized int8 weight, fed as input 1) or a float torch tensor
            (``trt.Weights``). Conv layout ``(K, C/groups, *k)``; deconv ``(C, K/groups, *k)``.
        bias: a float torch tensor (``trt.Weights``), an ITensor (input 2) or ``None``.
        geometry: stride, padding, dilation, groups, and whether it is a deconvolution.

    Raises:
        ConversionError: unsupported geometry (e.g. ``output_padding`` larger than ``padding``).
    """
    kshape = _kernel_shape(kernel)
    spatial = len(kshape) - 2
    if spatial not in (1, 2, 3):
        raise ConversionError(f"{name}: {len(kshape)}-d kernels are not supported")
    if rank(x) != spatial + 2:
        raise ConversionError(
            f"{name}: input rank {rank(x)} does not match a {spatial}-d kernel (unbatched inputs are not supported)"
        )
    window = _window(name, kshape, geometry)
    lifted = spatial == 1
    if lifted:  # TensorRT convolutions are 2-d or 3-d: run a 1-d one on a trailing size-1 dim
        x = unsqueeze(ctx, ctx.name(name, "input_2d"), x, [3])
        kernel = _lift_1d(ctx, name, kernel)
        window = window.lifted()
    maps = kshape[1] * geometry.groups if geometry.transposed else kshape[0]
    # Strongly typed: kernel and bias weights have the input's float type (float16 for float16 float parts).
    dtype = torch_dtype(x.dtype)
    kernel_w = ctx.weights(kernel, dtype) if isinstance(kernel, torch.Tensor) else ctx.weights(None, dtype)
    bias_w = ctx.weights(bias, dtype) if isinstance(bias, torch.Tensor) else ctx.weights(None, dtype)
    add = ctx.network.add_deconvolution_nd if geometry.transposed else ctx.network.add_convolution_nd
    layer = add(x, maps, window.kernel, kernel_w, bias_w)
    if layer is not None:
        layer.stride_nd, layer.dilation_nd = window.stride, window.dilation
        layer.pre_padding, layer.post_padding = window.pre, window.post
        layer.num_groups = int(geometry.groups)
        if not isinstance(kernel, torch.Tensor):
            layer.set_input(1, kernel)
        if bias is not None and not isinstance(bias, torch.Tensor):
            layer.set_input(2, bias)
    kind = "deconvolution" if geometry.transposed else "convolution"
    out = ctx.add(layer, ctx.name(name, "conv_2d") if lifted else name, kind).get_output(0)
    return squeeze(ctx, name, out, [3]) if lifted else out


def matmul(ctx: ConversionContext, name: str, a: ITensor, b: ITensor, transpose_b: bool = False) -> ITensor:
    """``torch.matmul(a, b)`` (``b`` transposed on its last two dims when ``transpose_b``).

    1-d operands use MatrixOperation.VECTOR; batch dims broadcast after rank matching.
    """
    ops = ctx.trt.MatrixOperation
    op_a = ops.VECTOR if rank(a) == 1 else ops.NONE
    op_b = ops.VECTOR if rank(b) == 1 else (ops.TRANSPOSE if transpose_b else ops.NONE)
    if rank(a) > 1 and rank(b) > 1 and rank(a) != rank(b):
        target = max(rank(a), rank(b))
        a = expand_rank(ctx, ctx.name(name, "lhs_rank"), a, target)
        b = expand_rank(ctx, ctx.name(name, "rhs_rank"), b, target)
    elif rank(a) == 1 and rank(b) > 2:
        # VECTOR operands broadcast over the other operand's batch dims only when ranks line up.
        a = expand_rank(ctx, ctx.name(name, "lhs_rank"), a, rank(b) - 1)
    elif rank(b) == 1 and rank(a) > 2:
        b = expand_rank(ctx, ctx.name(name, "rhs_rank"), b, rank(a) - 1)
    layer = ctx.network.add_matrix_multiply(a, op_a, b, op_b)
    return ctx.add(layer, name, "matrix multiply").get_output(0)


def linear(ctx: ConversionContext, name: str, x: ITensor, weight: Kernel, bias: Kernel | None) -> ITensor:
    """``x @ weight.T + bias`` for a ``(out, in)`` weight (dequantized ITensor or float tensor)."""
    w = ctx.as_tensor(weight, ctx.name(name, "weight")) if isinstance(weight, torch.Tensor) else weight
    if rank(w) != 2:
        raise ConversionError(f"{name}: linear weight must be 2-d, got shape {dims_of(w)}")
    if bias is None:
        return matmul(ctx, name, x, w, transpose_b=True)
    y = matmul(ctx, ctx.name(name, "matmul"), x, w, transpose_b=True)
    return elementwise(ctx, name, y, bias, "add")
