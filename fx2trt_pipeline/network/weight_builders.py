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

from typing import Union
from collections.abc import Sequence

import torch

from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import dequantize, elementwise, scale_constant
from fx2trt_pipeline.network.shape_builders import dims_of, expand_rank, rank, squeeze, unsqueeze
from fx2trt_pipeline.errors import ConversionError

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


def conv_nd(
    ctx: ConversionContext,
    name: str,
    x: ITensor,
    kernel: Kernel,
    bias: Kernel | None,
    stride: Sequence[int],
    padding: Sequence[int] | str,
    dilation: Sequence[int],
    groups: int,
    *,
    transposed: bool = False,
    output_padding: Sequence[int] = (),
) -> ITensor:
    """IConvolutionLayer / IDeconvolutionLayer with torch's weight layouts and padding rules.

    Args:
        kernel: an ITensor (the dequantized int8 weight, fed as input 1) or a float torch tensor
            (``trt.Weights``). Conv layout ``(K, C/groups, *k)``; deconv ``(C, K/groups, *k)``.
        bias: a float torch tensor (``trt.Weights``), an ITensor (input 2) or ``None``.
        padding: ints, or ``"same"`` / ``"valid"`` (convolution only).
        output_padding: deconvolution only; extra output rows/cols at the end.

    Raises:
        ConversionError: unsupported geometry (e.g. ``output_padding`` larger than ``padding``).
    """
    kshape = _kernel_shape(kernel)
    spatial = len(kshape) - 2
    if spatial not in (1, 2, 3):
        raise ConversionError(f"{name}: {len(kshape)}-d kernels are not supported")
    if rank(x) != spatial + 2:
        raise ConversionError(
            f"{name}: input rank {rank(x)} does not match a {spatial}-d kernel "
            "(unbatched inputs are not supported)"
        )
    k = list(kshape[2:])
    stride, dilation = list(stride), list(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            pre, post = [0] * spatial, [0] * spatial
        elif padding == "same" and not transposed:
            pre, post = (list(p) for p in same_padding(k, dilation))
        else:
            raise ConversionError(f"{name}: padding={padding!r} is not supported here")
    else:
        pre, post = list(padding), list(padding)
    out_pad = list(output_padding) or [0] * spatial
    if transposed:
        post = [p - op for p, op in zip(post, out_pad)]
        if any(p < 0 for p in post):
            raise ConversionError(
                f"{name}: output_padding {out_pad} larger than padding {list(padding)} "
                "is not supported by the deconvolution converter"
            )
    lifted = spatial == 1
    if lifted:  # TensorRT convolutions are 2-d or 3-d: run a 1-d one on a trailing size-1 dim
        x = unsqueeze(ctx, ctx.name(name, "input_2d"), x, [3])
        kernel = _lift_1d(ctx, name, kernel)
        k, stride, dilation, pre, post = k + [1], stride + [1], dilation + [1], pre + [0], post + [0]
    maps = kshape[1] * groups if transposed else kshape[0]
    kernel_w = ctx.weights(kernel) if isinstance(kernel, torch.Tensor) else ctx.weights(None)
    bias_w = ctx.weights(bias) if isinstance(bias, torch.Tensor) else ctx.weights(None)
    add = ctx.network.add_deconvolution_nd if transposed else ctx.network.add_convolution_nd
    layer_name = ctx.name(name, "conv_2d") if lifted else name
    layer = add(x, maps, tuple(k), kernel_w, bias_w)
    if layer is not None:
        layer.stride_nd = tuple(stride)
        layer.dilation_nd = tuple(dilation)
        layer.pre_padding = tuple(pre)
        layer.post_padding = tuple(post)
        layer.num_groups = int(groups)
        if not isinstance(kernel, torch.Tensor):
            layer.set_input(1, kernel)
        if bias is not None and not isinstance(bias, torch.Tensor):
            layer.set_input(2, bias)
    out = ctx.add(layer, layer_name, "deconvolution" if transposed else "convolution").get_output(0)
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
