"""Identity, dropout (eval: identity) and concatenation converters."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from fx2trt_pipeline.converters.common import arg, module_of, node_arg
from fx2trt_pipeline.converters.registry import register
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import concat


@register(nn.Identity)
def convert_identity(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """nn.Identity: the value passes through without a layer."""
    return arg(args, kwargs, 0, "input")


def check_dropout(node: Node) -> str | None:
    """Accept dropout only in eval mode (it is then the identity)."""
    training = module_of(node).training if node.op == "call_module" else node_arg(node, 2, "training", True)
    return (
        "dropout in training mode is random; convert an eval-mode graph (model.eval())" if training else None
    )


@register(nn.Dropout, nn.Dropout1d, nn.Dropout2d, F.dropout, can_convert=check_dropout)
def convert_dropout(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """Eval-mode dropout is the identity: the value passes through without a layer."""
    return arg(args, kwargs, 0, "input")


@register(torch.cat, torch.concat, torch.concatenate)
def convert_cat(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``torch.cat(tensors, dim)`` -> IConcatenationLayer (constants become constant layers)."""
    values = arg(args, kwargs, 0, "tensors")
    dim = int(arg(args, kwargs, 1, "dim", kwargs.get("axis", 0)))
    tensors = [ctx.as_tensor(v, ctx.name(node, f"input{i}")) for i, v in enumerate(values)]
    return concat(ctx, ctx.name(node), tensors, dim)
