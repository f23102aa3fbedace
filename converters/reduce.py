"""Reduction converters: mean and sum over dims (keepdim), as ``torch.*`` and Tensor methods."""

from __future__ import annotations

import torch
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, dims_arg, node_arg
from fx2trt_pipeline.converters.registry import method, register
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import reduce
from fx2trt_pipeline.network.shape_builders import rank


def check_reduce(node: Node) -> str | None:
    """Accept mean / sum without a dtype cast."""
    dtype = node.kwargs.get("dtype")
    if dtype is None and len(node.args) > 1 and isinstance(node_arg(node, 1, "dim"), torch.dtype):
        dtype = node.args[1]  # torch.sum(x, torch.float16) form
    return None if dtype is None else f"reductions with dtype={dtype} are not supported"


def _reduce(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict, op: str) -> ITensor:
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    dims = dims_arg(arg(args, kwargs, 1, "dim", None))
    keepdim = bool(arg(args, kwargs, 2, "keepdim", False))
    if not dims:  # no dim (or an empty list) reduces over everything, as in torch
        dims = list(range(rank(x)))
    return reduce(ctx, ctx.name(node), x, op, dims, keepdim)


@register(torch.mean, method("mean"), can_convert=check_reduce)
def convert_mean(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``mean(dim, keepdim)`` -> IReduceLayer AVG."""
    return _reduce(ctx, node, args, kwargs, "AVG")


@register(torch.sum, method("sum"), can_convert=check_reduce)
def convert_sum(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``sum(dim, keepdim)`` -> IReduceLayer SUM."""
    return _reduce(ctx, node, args, kwargs, "SUM")
