"""Padding converters: ``F.pad`` and the ZeroPad / ConstantPad / ReflectionPad / ReplicationPad / CircularPad
modules -> one ISliceLayer with a sample mode (TF-style "same" padding, segmentation heads)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, is_trt_tensor, module_of, node_arg
from fx2trt_pipeline.converters.registry import register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.tensor_builders import PAD_MODES, pad

#: Pad module classes by the F.pad mode they implement (ZeroPad subclasses ConstantPad with value 0).
MODULE_MODES: dict[type, str] = {
    **{
        cls: "constant"
        for cls in (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)
    },
    **{cls: "reflect" for cls in (nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d)},
    **{cls: "replicate" for cls in (nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d)},
    **{cls: "circular" for cls in (nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)},
}


def check_pad(node: Node) -> str | None:
    """Accept constant / reflect / replicate / circular padding (widths may come from static shapes)."""
    if node.op == "call_module":
        return None
    mode = node_arg(node, 2, "mode", "constant")
    if mode not in PAD_MODES:
        return f"mode={mode!r} is not supported (only {', '.join(PAD_MODES)})"
    return None


@register(F.pad, *MODULE_MODES, can_convert=check_pad)
def convert_pad(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``F.pad(x, pad, mode, value)`` / pad modules -> ISliceLayer (FILL / REFLECT / CLAMP / WRAP)."""
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    if node.op == "call_module":
        module = module_of(node)
        widths, mode, value = module.padding, MODULE_MODES[type(module)], getattr(module, "value", 0.0)
    else:
        widths = arg(args, kwargs, 1, "pad")
        mode, value = arg(args, kwargs, 2, "mode", "constant"), arg(args, kwargs, 3, "value", None)
    if any(is_trt_tensor(w) for w in widths):
        raise ConversionError("pad widths computed from dynamic dims are not supported; make those dims static")
    return pad(ctx, ctx.name(node), x, [int(w) for w in widths], mode, float(value or 0.0))
