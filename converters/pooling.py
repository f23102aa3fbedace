"""2-d pooling converters: max, average and adaptive average (nn modules and functionals).

torch's ``ceil_mode`` drops a last window that would start in the right padding; TensorRT's round-up
mode does not, so the converter computes torch's output size and picks the TensorRT rounding that
matches it exactly (or refuses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, module_of
from fx2trt_pipeline.converters.registry import register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import PoolWindow, ints, pooling, reduce, static_spatial


def _is_max_function(node: Node) -> bool:
    """F.max_pool2d / torch.max_pool2d / aten.max_pool2d (named so; avg pooling otherwise)."""
    return node.op == "call_function" and "max_pool" in (getattr(node.target, "__name__", "") or "")


def _pool_params(node: Node, args: tuple, kwargs: dict, module: nn.Module | None) -> dict[str, Any]:
    if module is not None:
        keys = (
            "kernel_size",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
            "divisor_override",
            "dilation",
            "return_indices",
        )
        return {k: getattr(module, k, None) for k in keys}
    is_max = _is_max_function(node)
    names = (
        ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        if is_max
        else ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    )
    defaults = {
        "stride": None,
        "padding": 0,
        "dilation": 1,
        "ceil_mode": False,
        "return_indices": False,
        "count_include_pad": True,
        "divisor_override": None,
    }
    return {n: arg(args, kwargs, i + 1, n, defaults.get(n)) for i, n in enumerate(names)}


def check_pool(node: Node) -> str | None:
    """Accept 2-d max / avg pooling without dilation, indices or divisor override."""
    module = module_of(node) if node.op == "call_module" else None
    raw = _pool_params(node, node.args, dict(node.kwargs), module)
    if raw.get("dilation") not in (None, 1, (1, 1), [1, 1]):
        return f"dilated pooling is not supported (dilation={raw['dilation']})"
    if raw.get("return_indices"):
        return "return_indices=True is not supported"
    if raw.get("divisor_override") is not None:
        return "divisor_override is not supported"
    return None


def torch_pool_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """torch's pooled length (a window may not start in the right padding when ceil_mode)."""
    out = (size + 2 * pad - kernel + ((stride - 1) if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _rounding(
    name: str, spatial: Sequence[int], k: Sequence[int], s: Sequence[int], p: Sequence[int], ceil_mode: bool
) -> bool:
    """True when TensorRT must round up to reproduce torch's output size on every spatial dim."""
    if not ceil_mode:
        return False
    wanted = [torch_pool_size(n, kk, ss, pp, True) for n, kk, ss, pp in zip(spatial, k, s, p)]
    down = [(n + 2 * pp - kk) // ss + 1 for n, kk, ss, pp in zip(spatial, k, s, p)]
    up = [math.ceil((n + 2 * pp - kk) / ss) + 1 for n, kk, ss, pp in zip(spatial, k, s, p)]
    if wanted == down:
        return False
    if wanted == up:
        return True
    raise ConversionError(
        f"{name}: ceil_mode output size {wanted} matches neither TensorRT rounding "
        f"({down} / {up}); pad the input explicitly"
    )


@register(nn.MaxPool2d, F.max_pool2d, torch.max_pool2d, nn.AvgPool2d, F.avg_pool2d, can_convert=check_pool)
def convert_pool(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """MaxPool2d / AvgPool2d -> IPoolingLayer (padding, ceil_mode, count_include_pad)."""
    module = ctx.module(node) if node.op == "call_module" else None
    is_max = isinstance(module, nn.MaxPool2d) or _is_max_function(node)
    p = _pool_params(node, args, kwargs, module)
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    k = ints(p["kernel_size"], 2)
    s = ints(p["stride"], 2) if p["stride"] not in (None, (), []) else k
    pad = ints(p["padding"], 2)
    name = ctx.name(node)
    ceil_mode = bool(p["ceil_mode"])
    round_up = _rounding(name, static_spatial(x, 2, name), k, s, pad, ceil_mode) if ceil_mode else False
    count_include_pad = bool(p.get("count_include_pad", True))
    if round_up and not is_max and count_include_pad and any(pad):
        raise ConversionError(
            f"{name}: avg pooling with ceil_mode, padding and count_include_pad=True "
            "divides edge windows differently in TensorRT; use count_include_pad=False"
        )
    window = PoolWindow(k, s, pad, ceil_mode=round_up, exclude_padding=not count_include_pad)
    return pooling(ctx, name, x, "MAX" if is_max else "AVERAGE", window)


def _adaptive_output(node: Node, args: Any, kwargs: Any) -> Any:
    if node.op == "call_module":
        return module_of(node).output_size
    return arg(args, kwargs, 1, "output_size")


@register(nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d)
def convert_adaptive_avg_pool(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """AdaptiveAvgPool2d -> global mean (output 1) or pooling when the output divides the input."""
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    name = ctx.name(node)
    out = _adaptive_output(node, args, kwargs)
    out = [out, out] if isinstance(out, int) or out is None else list(out)
    if all(o == 1 for o in out):
        return reduce(ctx, name, x, "AVG", [-2, -1], keepdim=True)  # works with dynamic spatial dims too
    spatial = static_spatial(x, 2, name)
    out = [n if o is None else int(o) for o, n in zip(out, spatial)]
    if any(n % o for n, o in zip(spatial, out)):
        raise ConversionError(
            f"{name}: adaptive pooling from {list(spatial)} to {out} needs the output size "
            "to divide the input size (or be 1)"
        )
    k = [n // o for n, o in zip(spatial, out)]
    return pooling(ctx, name, x, "AVERAGE", PoolWindow(k, k, [0, 0]))
