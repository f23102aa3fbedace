"""torchvision's ``torch.fx.wrap``-ped Swin helpers in graphs quantized elsewhere (torch.ao reference graphs):
``shifted_window_attention``, ``_get_relative_position_bias`` and ``_patch_merging_pad``.

Our own capture replaces them before quantization (``capture/rewrites.py``, ``capture/swin_helpers.py``); a
torch.ao reference graph keeps them as opaque calls. Here the same static module (padding, shift and window
mask fixed for the input's feature-map size, which the network knows) is traced and its nodes converted in
place of the call, each layer named ``<call node>.<module node>``. What the graph left in float (torch.ao
does not see inside the call) stays float: the q/k/v and output projections and both attention matmuls.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node
from torchvision.models import swin_transformer as swin

from fx2trt_pipeline.capture.swin_helpers import helper_arguments, helper_module, refusal
from fx2trt_pipeline.converters.registry import REGISTRY, key_of, register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.shape_builders import dims_of


def _functional(module: nn.Module) -> GraphModule:
    """``module`` traced, its ``nn.Linear`` calls as ``F.linear`` on its parameters (no submodule lookups)."""
    sub = torch.fx.symbolic_trace(module)
    for node in list(sub.graph.nodes):
        if node.op != "call_module":
            continue
        layer = sub.get_submodule(str(node.target))
        if type(layer) is not nn.Linear:
            raise ConversionError(f"{type(layer).__name__} inside a decomposed helper is not supported")
        with sub.graph.inserting_before(node):
            weight = sub.graph.get_attr(f"{node.target}.weight")
            bias = sub.graph.get_attr(f"{node.target}.bias") if layer.bias is not None else None
            linear = sub.graph.call_function(F.linear, (node.args[0], weight, bias))
        node.replace_all_uses_with(linear)
        sub.graph.erase_node(node)
    sub.recompile()
    return sub


def convert_inline(ctx: ConversionContext, node: Node, module: nn.Module, inputs: list[Any]) -> Any:
    """Convert ``module`` (traced) in place of ``node``; its layers are named ``<node>.<module node>``.

    Raises:
        ConversionError: a node of the traced module has no converter or is refused (the reason is given).
    """
    sub = _functional(module)
    for n in sub.graph.nodes:
        n.name = ctx.name(node, n.name)  # layer names must start with the FX node they implement
    values: dict[Node, Any] = {}
    placeholders = iter(inputs)
    for n in sub.graph.nodes:
        if n.op == "placeholder":
            values[n] = next(placeholders)
        elif n.op == "get_attr":
            values[n] = functools.reduce(getattr, str(n.target).split("."), sub)
            ctx.remember_get_attr(n, values[n])
        elif n.op == "output":
            return torch.fx.node.map_arg(n.args[0], lambda a: values[a])
        else:
            entry = REGISTRY.lookup(n)
            reason = "no converter registered" if entry is None else (entry.can_convert and entry.can_convert(n))
            if reason:
                raise ConversionError(f"{n.format_node()} in the decomposed {node.target.__name__}: {reason}")
            args = torch.fx.node.map_arg(n.args, lambda a: values[a])
            kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: values[a])
            values[n] = entry.fn(ctx, n, args, kwargs)
    raise ConversionError(f"the decomposed {node.target.__name__} has no output")  # an FX graph always has one


def check_window_attention(node: Node) -> str | None:
    """Accept Swin V1 window attention in eval mode with constant weights."""
    arguments = helper_arguments(node.target, node.args, dict(node.kwargs))
    reason = refusal(node.target, arguments)
    if reason:
        return reason
    for name in ("qkv_weight", "proj_weight", "qkv_bias", "proj_bias", "relative_position_bias"):
        value = arguments[name]
        if isinstance(value, Node) and value.op != "get_attr" and key_of(value) is not swin._get_relative_position_bias:
            return f"{name} is computed in the graph; only constant weights are supported"
    return None


def _feature_map(ctx: ConversionContext, node: Node, x: ITensor) -> tuple[int, int]:
    dims = dims_of(x)
    if len(dims) != 4 or any(d < 0 for d in dims[1:]):
        raise ConversionError(
            f"{node.name}: needs a (batch, H, W, C) input with static H, W and C (got {tuple(dims)}); build with a "
            "static spatial size (only the batch may be dynamic)"
        )
    return dims[1], dims[2]


@register(swin.shifted_window_attention, can_convert=check_window_attention)
def convert_shifted_window_attention(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Swin window attention -> the static window attention's layers (pad, roll, windows, attention, merge)."""
    arguments = helper_arguments(node.target, args, kwargs)
    x = ctx.as_tensor(arguments["input"], ctx.name(node, "input"))
    module = helper_module(node.target, arguments, _feature_map(ctx, node, x))
    return convert_inline(ctx, node, module, [x])


def check_relative_position_bias(node: Node) -> str | None:
    """Accept a bias read from constant tables (get_attr)."""
    table, index = node.args[0], node.args[1]
    constant = all(isinstance(a, Node) and a.op == "get_attr" for a in (table, index))
    return None if constant else "the bias table is computed in the graph (Swin V2); only constant tables are supported"


@register(swin._get_relative_position_bias, can_convert=check_relative_position_bias)
def convert_relative_position_bias(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
    """The relative-position bias of constant tables: computed now, a constant for the attention that reads it."""
    return swin._get_relative_position_bias(*args, **kwargs).detach()


@register(swin._patch_merging_pad)
def convert_patch_merging_pad(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """Swin patch merging's pad + interleaved quarters -> pad and strided slices concatenated on channels."""
    x = ctx.as_tensor(args[0] if args else kwargs["x"], ctx.name(node, "input"))
    module = helper_module(node.target, {}, _feature_map(ctx, node, x))
    return convert_inline(ctx, node, module, [x])
