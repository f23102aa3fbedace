"""Identity, eval-mode identities (every dropout variant, torchvision's stochastic_depth), dropped runtime
assertions (``torch._assert``) and concatenation converters."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node
from torchvision.ops import stochastic_depth

from fx2trt_pipeline.converters.common import arg, module_of, node_arg
from fx2trt_pipeline.converters.registry import register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import concat


@register(nn.Identity)
def convert_identity(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """nn.Identity: the value passes through without a layer."""
    return arg(args, kwargs, 0, "input")


def check_dropout(node: Node) -> str | None:
    """Accept dropout only in eval mode (it is then the identity)."""
    training = module_of(node).training if node.op == "call_module" else node_arg(node, 2, "training", True)
    return "dropout in training mode is random; convert an eval-mode graph (model.eval())" if training else None


_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_DROPOUT_FUNCTIONS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)


@register(*_DROPOUT_MODULES, *_DROPOUT_FUNCTIONS, can_convert=check_dropout)
def convert_dropout(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """Eval-mode dropout is the identity: the value passes through without a layer."""
    return arg(args, kwargs, 0, "input")


def check_stochastic_depth(node: Node) -> str | None:
    """Accept ``stochastic_depth(x, p, mode, training=False)`` (the identity in eval mode)."""
    return (
        "stochastic_depth in training mode drops rows at random; convert an eval-mode graph"
        if node_arg(node, 3, "training", True)
        else None
    )


@register(stochastic_depth, can_convert=check_stochastic_depth)
def convert_stochastic_depth(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """Eval-mode stochastic depth is the identity: the value passes through without a layer."""
    return arg(args, kwargs, 0, "input")


@register(torch._assert)
def convert_assert(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> None:
    """``torch._assert(cond, msg)`` adds no layer; a condition known False at build time is an error."""
    condition = arg(args, kwargs, 0, "condition")
    if isinstance(condition, bool) and not condition:
        raise ConversionError(f"the model's assertion fails for these input shapes: {arg(args, kwargs, 1, 'message')}")
    return None


@register(torch.cat, torch.concat, torch.concatenate)
def convert_cat(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``torch.cat(tensors, dim)`` -> IConcatenationLayer (constants become constant layers)."""
    values = arg(args, kwargs, 0, "tensors")
    dim = int(arg(args, kwargs, 1, "dim", kwargs.get("axis", 0)))
    tensors = [ctx.as_tensor(v, ctx.name(node, f"input{i}")) for i, v in enumerate(values)]
    return concat(ctx, ctx.name(node), tensors, dim)
