"""Unfused BatchNorm converters (eval mode, running statistics) -> one IScaleLayer per channel."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, attr_value, is_constant, module_of, node_arg
from fx2trt_pipeline.converters.registry import register
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import channel_affine


def check_batch_norm(node: Node) -> str | None:
    """Accept eval-mode BatchNorm with running statistics and constant parameters."""
    if node.op == "call_module":
        module = module_of(node)
        if module.training:
            return "BatchNorm in train mode uses batch statistics; call model.eval() first"
        if module.running_mean is None:
            return "BatchNorm without running statistics (track_running_stats=False) is not supported"
        return None
    if node_arg(node, 5, "training", False):
        return "batch_norm(training=True) uses batch statistics; convert an eval-mode graph"
    for index, name in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        value = node_arg(node, index, name, None)
        if value is None and index < 3:
            return f"batch_norm needs {name}"
        if value is not None and not is_constant(value):
            return f"batch_norm {name} must be a constant (get_attr), got {value}"
    return None


def batch_norm_affine(
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``bn(x) == x * scale + shift`` per channel."""
    scale = torch.rsqrt(var.double() + eps)
    if weight is not None:
        scale = scale * weight.double()
    shift = -mean.double() * scale
    if bias is not None:
        shift = shift + bias.double()
    return scale.float(), shift.float()


def _tensor(value: Any) -> torch.Tensor | None:
    value = attr_value(value)
    return None if value is None else value.detach()


@register(nn.BatchNorm1d, nn.BatchNorm2d, F.batch_norm, can_convert=check_batch_norm)
def convert_batch_norm(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Eval BatchNorm -> IScaleLayer: scale = gamma / sqrt(var + eps), shift = beta - mean * scale."""
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    if node.op == "call_module":
        m = ctx.module(node)
        weight = m.weight.detach() if m.weight is not None else None
        bias = m.bias.detach() if m.bias is not None else None
        scale, shift = batch_norm_affine(m.running_mean, m.running_var, weight, bias, m.eps)
    else:
        mean, var = (
            _tensor(arg(args, kwargs, 1, "running_mean")),
            _tensor(arg(args, kwargs, 2, "running_var")),
        )
        weight, bias = (
            _tensor(arg(args, kwargs, 3, "weight", None)),
            _tensor(arg(args, kwargs, 4, "bias", None)),
        )
        scale, shift = batch_norm_affine(mean, var, weight, bias, float(arg(args, kwargs, 7, "eps", 1e-5)))
    return channel_affine(ctx, ctx.name(node), x, scale, shift)
