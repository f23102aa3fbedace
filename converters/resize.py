"""Resize converters: ``F.interpolate`` and the Upsample modules (nearest, bilinear with align_corners), by
scale factor or by size, including sizes read from tensor shapes (``size=x.shape[-2:]``, dynamic-shape safe)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, is_trt_tensor, module_of
from fx2trt_pipeline.converters.registry import register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import Interpolation, resize
from fx2trt_pipeline.network.shape_builders import dim_size, dims_of, rank, shape_vector

_MODES = ("nearest", "bilinear")


def _params(node: Node, args: Any, kwargs: Any) -> dict[str, Any]:
    if node.op == "call_module":
        module = module_of(node)
        align = True if isinstance(module, nn.UpsamplingBilinear2d) else module.align_corners
        return {
            "size": module.size,
            "scale_factor": module.scale_factor,
            "mode": module.mode,
            "align_corners": align,
            "recompute_scale_factor": getattr(module, "recompute_scale_factor", None),
            "antialias": False,
        }
    names = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")
    defaults = (None, None, "nearest", None, None, False)
    return {n: arg(args, kwargs, i + 1, n, d) for i, (n, d) in enumerate(zip(names, defaults))}


def check_resize(node: Node) -> str | None:
    """Accept nearest / bilinear without antialiasing."""
    p = _params(node, node.args, dict(node.kwargs))
    if p["mode"] not in _MODES:
        return f"mode={p['mode']!r} is not supported (only {', '.join(_MODES)})"
    if p["antialias"]:
        return "antialias=True is not supported"
    if p["size"] is None and p["scale_factor"] is None:
        return "either size or scale_factor must be given"
    if isinstance(p["scale_factor"], Node):
        return "scale_factor must be a Python number (sizes may come from tensor shapes: use size=)"
    return None


def _pair(value: Any, count: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * count


@register(F.interpolate, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, can_convert=check_resize)
def convert_interpolate(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """interpolate / Upsample -> IResizeLayer with torch's coordinate transformation and rounding."""
    p = _params(node, args, kwargs)
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    name = ctx.name(node)
    if rank(x) != 4:
        raise ConversionError(f"{name}: only 4-d (N, C, H, W) inputs are supported, got rank {rank(x)}")
    interpolation = Interpolation(p["mode"], bool(p["align_corners"]))
    if p["size"] is None and not p["recompute_scale_factor"]:
        scales = [1.0, 1.0, *(float(s) for s in _pair(p["scale_factor"], 2))]
        return resize(ctx, name, x, interpolation, scales=scales)
    if p["size"] is not None:  # ints, or 1-element shape tensors when sizes come from dynamic dims
        spatial = [s if is_trt_tensor(s) else int(s) for s in _pair(p["size"], 2)]
    else:
        in_hw = dims_of(x)[2:]
        if any(d < 0 for d in in_hw):
            raise ConversionError(f"{name}: recompute_scale_factor needs static spatial dims")
        spatial = [int(d * float(s)) for d, s in zip(in_hw, _pair(p["scale_factor"], 2))]
    if all(d >= 0 for d in dims_of(x)[:2]) and not any(is_trt_tensor(s) for s in spatial):
        return resize(ctx, name, x, interpolation, shape=(*dims_of(x)[:2], *spatial))
    batch_channels = [dim_size(ctx, ctx.name(name, "sizes"), x, d) for d in (0, 1)]
    shape = shape_vector(ctx, ctx.name(name, "out"), [*batch_channels, *spatial])
    return resize(ctx, name, x, interpolation, shape=shape)
