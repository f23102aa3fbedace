"""torchvision's ``torch.fx.wrap``-ped Swin helpers, as they appear in graphs made elsewhere, as plain ops.

A graph traced by someone else (``torch.fx.symbolic_trace(swin_t())``, torch.ao's ``prepare_fx`` /
``convert_to_reference_fx``) keeps ``shifted_window_attention``, ``_get_relative_position_bias`` and
``_patch_merging_pad`` as opaque calls whose padding, shift and mask depend on the feature-map size. With that
size known they are the same static modules our own capture uses (:mod:`.rewrites`):

* capture (:func:`inline_helper`, a float graph about to be quantized): the call is replaced by the traced
  :class:`~.rewrites.StaticWindowAttention` inlined into the graph, its q/k/v and output projections as
  ``nn.Linear`` layers at the attention block's own path (``features.1.0.attn.qkv``), so placement quantizes
  them and both attention matmuls like any other. The relative-position bias is static and is folded.
* conversion (``converters/torchvision_ops.py``, a torch.ao reference graph): the same module is traced and
  converted in place of the call. Its linears and matmuls stay float there, as the graph left them.

Example:
    >>> import torch
    >>> pad = PatchMergingPad((3, 4))
    >>> pad(torch.randn(1, 3, 4, 2)).shape
    torch.Size([1, 2, 2, 8])
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node
from torchvision.models import swin_transformer as swin

from fx2trt_pipeline.capture.graph_rebuild import NotLowered, Rebuild
from fx2trt_pipeline.capture.rewrites import StaticWindowAttention, _linear

#: The wrapped helpers this module replaces.
WRAPPED = (swin.shifted_window_attention, swin._get_relative_position_bias, swin._patch_merging_pad)


class PatchMergingPad(nn.Module):
    """torchvision's ``_patch_merging_pad`` for a fixed feature-map size ``hw``: pad to even, then the four
    interleaved quarters concatenated on the channels."""

    def __init__(self, hw: tuple[int, int]) -> None:
        super().__init__()
        self.hw = hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.hw
        if h % 2 or w % 2:
            x = torch.nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        return torch.cat(
            [x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1
        )


@dataclass
class _AttentionParts:
    """What :class:`~.rewrites.StaticWindowAttention` reads from torchvision's ``ShiftedWindowAttention``."""

    qkv: nn.Linear
    proj: nn.Linear
    window_size: list[int]
    num_heads: int
    shift_size: list[int]
    position_bias: torch.Tensor

    def get_relative_position_bias(self) -> torch.Tensor:
        return self.position_bias


def helper_arguments(target: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The arguments of a call to a wrapped helper, by parameter name (defaults filled in)."""
    bound = inspect.signature(target).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def refusal(target: Any, arguments: dict[str, Any]) -> str | None:
    """Why a call cannot be made static (``None`` when it can): Swin V2's cosine attention, training mode."""
    if target is swin.shifted_window_attention:
        if arguments["logit_scale"] is not None:
            return "Swin V2 cosine attention (logit_scale) is not decomposed"
        if arguments["training"] and (arguments["attention_dropout"] or arguments["dropout"]):
            return "attention in training mode (dropout) is not decomposed"
    return None


def helper_module(target: Any, arguments: dict[str, Any], hw: tuple[int, int]) -> nn.Module:
    """The static module computing a wrapped helper's call on ``(batch, *hw, channels)`` inputs.

    ``arguments`` hold tensor values (not nodes), as :func:`helper_arguments` names them.
    """
    if target is swin._patch_merging_pad:
        return PatchMergingPad(hw)
    parts = _AttentionParts(
        qkv=_linear(arguments["qkv_weight"], arguments["qkv_bias"]),
        proj=_linear(arguments["proj_weight"], arguments["proj_bias"]),
        window_size=list(arguments["window_size"]),
        num_heads=int(arguments["num_heads"]),
        shift_size=list(arguments["shift_size"]),
        position_bias=arguments["relative_position_bias"],
    )
    return StaticWindowAttention(parts, hw)  # type: ignore[arg-type]  # duck-typed block


def _owner_path(rb: Rebuild, weight: Any) -> str | None:
    """``features.1.0.attn`` for a qkv weight read as ``get_attr features.1.0.attn.qkv.weight``."""
    if isinstance(weight, Node) and weight.op == "get_attr" and str(weight.target).endswith(".qkv.weight"):
        return str(weight.target)[: -len(".qkv.weight")]
    return None


def _install(gm: GraphModule, path: str, module: nn.Module) -> None:
    """Put ``module`` at ``path`` in ``gm``, keeping what a plain container there already held."""
    parent_path, _, name = path.rpartition(".")
    parent: nn.Module = gm
    for part in parent_path.split(".") if parent_path else []:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    old = getattr(parent, name, None)
    if isinstance(old, nn.Module):
        for key, child in old._modules.items():
            if not hasattr(module, key):
                module.add_module(key, child)
        for key, param in old._parameters.items():
            if not hasattr(module, key):
                module.register_parameter(key, param)
        for key, tensor in old._buffers.items():
            if not hasattr(module, key):
                module.register_buffer(key, tensor)
    setattr(parent, name, module)


def inline_helper(rb: Rebuild, node: Node) -> Any:
    """Replace a wrapped-helper call of a float graph by its static module's ops (see the module docstring).

    Raises:
        NotLowered: a relative-position bias (folded separately), Swin V2, or arguments computed from data.
    """
    if node.target is swin._get_relative_position_bias:
        raise NotLowered("the relative-position bias is static and is folded into a constant")
    old = helper_arguments(node.target, node.args, dict(node.kwargs))
    reason = refusal(node.target, old)
    if reason:
        raise NotLowered(reason)
    x = old["input"] if "input" in old else old["x"]
    values = {k: (rb.static(v, k) if k not in ("input", "x") else v) for k, v in old.items()}
    hw = tuple(rb.shape(x)[-3:-1])
    module = helper_module(node.target, values, hw)  # type: ignore[arg-type]
    owner = _owner_path(rb, old.get("qkv_weight")) or node.name
    if rb.modules.get(owner) is not None and type(rb.modules[owner]) is not nn.Module:
        owner = node.name  # the path holds a real module: do not replace it
    sub = torch.fx.symbolic_trace(module)
    if any(n.op in ("call_module", "get_attr") for n in sub.graph.nodes):
        _install(rb.gm, owner, module)
    prefix = owner.replace(".", "_")
    env: dict[Node, Any] = {}
    result: Any = None
    for n in sub.graph.nodes:
        if n.op == "placeholder":
            env[n] = rb.new(x)
        elif n.op == "output":
            result = torch.fx.node.map_arg(n.args[0], lambda a: env[a])
        else:
            args = torch.fx.node.map_arg(n.args, lambda a: env[a])
            kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: env[a])
            target = f"{owner}.{n.target}" if n.op in ("call_module", "get_attr") else n.target
            env[n] = rb.graph.create_node(n.op, target, args, kwargs, name=f"{prefix}_{n.name}")
    return result


__all__ = ["WRAPPED", "PatchMergingPad", "helper_arguments", "helper_module", "inline_helper", "refusal"]
