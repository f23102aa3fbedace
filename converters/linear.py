"""Linear and matrix-product converters: F.linear, nn.Linear, torch.ao reference Linear / LinearReLU,
matmul (``@``), bmm and addmm."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn import intrinsic as nni
from torch.ao.nn.quantized import reference as nnqr
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, module_of, node_arg
from fx2trt_pipeline.converters.conv import constant_weight_reason, module_weight, reference_weight_reason
from fx2trt_pipeline.converters.registry import method, register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import activation, elementwise
from fx2trt_pipeline.network.shape_builders import rank
from fx2trt_pipeline.network.weight_builders import linear, matmul
from fx2trt_pipeline.quantize import int8_ops


def check_functional_linear(node: Node) -> str | None:
    """Accept F.linear with a constant (or dequantized int8 constant) weight."""
    return constant_weight_reason(node_arg(node, 1, "weight"))


@register(F.linear, int8_ops.linear, can_convert=check_functional_linear)
def convert_functional_linear(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``F.linear(x, w, b)`` (or its integer-arithmetic form) -> matrix multiply (+ bias)."""
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    return linear(ctx, ctx.name(node), x, arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias", None))


def check_linear_module(node: Node) -> str | None:
    """Accept nn.Linear; reference modules need symmetric qint8 weights."""
    module = module_of(node)
    if isinstance(module, nni.LinearReLU):
        module = module[0]
    return reference_weight_reason(module) if isinstance(module, nnqr.Linear) else None


def linear_module(ctx: ConversionContext, name: str, x: ITensor, module: nn.Module) -> ITensor:
    """An nn.Linear / reference Linear through :func:`linear`."""
    bias = module.bias.detach() if module.bias is not None else None
    return linear(ctx, name, ctx.as_tensor(x, ctx.name(name, "input")), module_weight(ctx, name, module), bias)


@register(nn.Linear, nnqr.Linear, can_convert=check_linear_module)
def convert_linear_module(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """nn.Linear (float) and torch.ao reference Linear -> matrix multiply (+ bias)."""
    return linear_module(ctx, ctx.name(node), arg(args, kwargs, 0, "input"), ctx.module(node))


@register(nni.LinearReLU, can_convert=check_linear_module)
def convert_linear_relu(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """torch.ao LinearReLU -> matrix multiply (+ bias) + ReLU."""
    y = linear_module(ctx, ctx.name(node, "linear"), arg(args, kwargs, 0, "input"), ctx.module(node)[0])
    return activation(ctx, ctx.name(node), y, "RELU")


@register(torch.matmul, operator.matmul, method("matmul"), int8_ops.matmul)
def convert_matmul(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``torch.matmul(a, b)`` / ``a @ b`` -> IMatrixMultiplyLayer (1-d operands as vectors)."""
    a = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "lhs"))
    b = ctx.as_tensor(arg(args, kwargs, 1, "other"), ctx.name(node, "rhs"))
    return matmul(ctx, ctx.name(node), a, b)


@register(torch.bmm, method("bmm"))
def convert_bmm(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``torch.bmm(a, b)`` on 3-d tensors -> IMatrixMultiplyLayer."""
    a = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "lhs"))
    b = ctx.as_tensor(arg(args, kwargs, 1, "mat2"), ctx.name(node, "rhs"))
    if rank(a) != 3 or rank(b) != 3:
        raise ConversionError(f"bmm needs 3-d operands, got ranks {rank(a)} and {rank(b)}")
    return matmul(ctx, ctx.name(node), a, b)


@register(torch.addmm)
def convert_addmm(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``torch.addmm(bias, a, b, beta=, alpha=)`` -> beta * bias + alpha * (a @ b)."""
    bias, a, b = (arg(args, kwargs, i, n) for i, n in enumerate(("input", "mat1", "mat2")))
    beta, alpha = float(kwargs.get("beta", 1)), float(kwargs.get("alpha", 1))
    name = ctx.name(node)
    product = matmul(
        ctx,
        ctx.name(name, "matmul"),
        ctx.as_tensor(a, ctx.name(name, "mat1")),
        ctx.as_tensor(b, ctx.name(name, "mat2")),
    )
    if alpha != 1:
        product = elementwise(ctx, ctx.name(name, "alpha"), product, alpha, "mul")
    if beta == 0:
        return product
    if beta != 1:
        bias = elementwise(ctx, ctx.name(name, "beta"), ctx.as_tensor(bias, ctx.name(name, "bias")), beta, "mul")
    return elementwise(ctx, name, product, bias, "add")
