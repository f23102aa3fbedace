"""Activation converters: ReLU family, sigmoid, tanh, SiLU, hardswish / hardsigmoid, GELU, PReLU, softmax,
as nn modules, functionals, ``torch.*`` and Tensor methods (in-place variants included)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, module_of, node_arg
from fx2trt_pipeline.converters.registry import method, register
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import activation, gated, prelu, softmax


def _input(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    return ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))


@register(nn.ReLU, F.relu, torch.relu, torch.relu_, method("relu"), method("relu_"))
def convert_relu(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """ReLU -> RELU activation."""
    return activation(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "RELU")


@register(nn.ReLU6, F.relu6)
def convert_relu6(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """ReLU6 -> CLIP activation on [0, 6]."""
    return activation(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "CLIP", 0.0, 6.0)


@register(nn.Hardtanh, F.hardtanh)
def convert_hardtanh(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Hardtanh -> CLIP activation on [min_val, max_val]."""
    if node.op == "call_module":
        module = ctx.module(node)
        low, high = module.min_val, module.max_val
    else:
        low, high = arg(args, kwargs, 1, "min_val", -1.0), arg(args, kwargs, 2, "max_val", 1.0)
    return activation(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "CLIP", low, high)


@register(nn.LeakyReLU, F.leaky_relu, torch._C._nn.leaky_relu_)
def convert_leaky_relu(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """LeakyReLU -> LEAKY_RELU activation with alpha = negative_slope."""
    if node.op == "call_module":
        slope = ctx.module(node).negative_slope
    else:
        slope = arg(args, kwargs, 1, "negative_slope", 0.01)
    return activation(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "LEAKY_RELU", slope)


def check_prelu(node: Node) -> str | None:
    """Accept PReLU whose slope is a constant."""
    if node.op == "call_module":
        return None
    slope = node_arg(node, 1, "weight")
    if isinstance(slope, Node) and slope.op != "get_attr":
        return f"the PReLU slope must be a constant (get_attr), got {slope}"
    return None


@register(nn.PReLU, torch.prelu, can_convert=check_prelu)
def convert_prelu(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """PReLU -> IParametricReLULayer with the slope broadcast on the channel dim."""
    slope: Any = ctx.module(node).weight.detach() if node.op == "call_module" else arg(args, kwargs, 1, "weight")
    return prelu(ctx, ctx.name(node), _input(ctx, node, args, kwargs), slope)


@register(nn.Sigmoid, torch.sigmoid, method("sigmoid"), method("sigmoid_"))
def convert_sigmoid(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Sigmoid -> SIGMOID activation."""
    return activation(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "SIGMOID")


@register(nn.Tanh, torch.tanh, method("tanh"), method("tanh_"))
def convert_tanh(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Tanh -> TANH activation."""
    return activation(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "TANH")


@register(nn.SiLU, F.silu)
def convert_silu(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """SiLU -> x * sigmoid(x) (TensorRT has no SiLU activation type)."""
    return gated(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "SIGMOID")


@register(nn.Hardswish, F.hardswish)
def convert_hardswish(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Hardswish -> x * hard_sigmoid(x) with torch's alpha 1/6, beta 1/2."""
    return gated(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "HARD_SIGMOID", 1.0 / 6.0, 0.5)


@register(nn.Hardsigmoid, F.hardsigmoid)
def convert_hardsigmoid(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Hardsigmoid -> HARD_SIGMOID activation, alpha 1/6, beta 1/2."""
    return activation(ctx, ctx.name(node), _input(ctx, node, args, kwargs), "HARD_SIGMOID", 1.0 / 6.0, 0.5)


def check_gelu(node: Node) -> str | None:
    """Accept GELU with approximate 'none' or 'tanh'."""
    approximate = module_of(node).approximate if node.op == "call_module" else node_arg(node, 1, "approximate", "none")
    return None if approximate in ("none", "tanh") else f"approximate={approximate!r} is not supported"


@register(nn.GELU, F.gelu, can_convert=check_gelu)
def convert_gelu(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """GELU -> GELU_ERF (exact) or GELU_TANH (approximate='tanh') activation."""
    approximate = (
        ctx.module(node).approximate if node.op == "call_module" else arg(args, kwargs, 1, "approximate", "none")
    )
    kind = "GELU_TANH" if approximate == "tanh" else "GELU_ERF"
    return activation(ctx, ctx.name(node), _input(ctx, node, args, kwargs), kind)


def _softmax_dim(node: Node) -> Any:
    if node.op == "call_module":
        return module_of(node).dim
    return node_arg(node, 1, "dim", None)


def check_softmax(node: Node) -> str | None:
    """Accept softmax with an explicit int dim and no dtype cast."""
    dim = _softmax_dim(node)
    if not isinstance(dim, int):
        return f"softmax needs an explicit int dim (implicit dim is deprecated in torch), got {dim!r}"
    dtype = node.kwargs.get("dtype") if node.op != "call_module" else None
    return None if dtype is None else f"softmax with dtype={dtype} is not supported"


@register(nn.Softmax, F.softmax, torch.softmax, method("softmax"), can_convert=check_softmax)
def convert_softmax(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Softmax over one dim -> ISoftMaxLayer."""
    return softmax(ctx, ctx.name(node), _input(ctx, node, args, kwargs), int(_softmax_dim(node)))
