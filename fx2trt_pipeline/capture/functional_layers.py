"""Functional convs and linears on parameters become layer modules, so the quantizer sees them as layers.

torch.fx traces through an ``nn.Conv2d`` subclass with its own forward (efficientnet_pytorch's
``Conv2dStaticSamePadding``: pad, then ``F.conv2d(x, self.weight, self.bias, ...)``) and through modules that
call ``F.conv2d`` / ``F.linear`` on their own parameters. The graph then holds a functional call whose weight is a
``get_attr`` node, and the quantizer's module path (BatchNorm folding, per-channel int8 weights, the integer
arithmetic of the reference model) would never see it. Here each such call becomes a ``call_module`` of a plain
``nn.Conv2d`` / ``nn.Linear`` / ... built from the call's own arguments and sharing the parameters, so the traced
model computes exactly what it did and every later step treats it like any other layer::

    pad = static_padding(x)                           pad = static_padding(x)
    w = get_attr _conv_stem.weight         ──>        _conv_stem = call_module _conv_stem   (nn.Conv2d, padding 0)
    conv2d = F.conv2d(pad, w, None, 2, 0, 1, 1)       _bn0 = call_module _bn0               (folded away later)
    _bn0 = call_module _bn0(conv2d)

Layers are named so that ``QuantConfig(skip=...)`` patterns and reports use the names the user knows: the path of
the parameter's owner when the weight is its ``weight`` (and the bias its ``bias``); the path of the calling module
when the weight is a constant made from parameters (``self.weight * self.mask``, folded by
:mod:`fx2trt_pipeline.capture.foreign` when example inputs are given); else the parameter's own path
(``mix.kernel``). A call whose weight depends on the input data (dynamic convolutions), whose parameters other ops
use too, or whose stride / padding are computed, is left as it is: :func:`layer_refusal` says why, and the
quantizer's reports repeat it.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from torch import nn
    >>> class SamePad(nn.Conv2d):
    ...     def forward(self, x):
    ...         return F.conv2d(F.pad(x, (0, 1, 0, 1)), self.weight, self.bias, self.stride, 0)
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(SamePad(3, 8, 3, stride=2)))
    >>> layers_from_functional(gm)
    ['0']
    >>> [n.op for n in gm.graph.nodes]
    ['placeholder', 'call_function', 'call_module', 'output']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_DECONV = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")


@dataclass(frozen=True)
class _Layer:
    """A functional op, the module class that computes it, and the names of its positional arguments."""

    module: type[nn.Module]
    params: tuple[str, ...]
    weight_dim: int


_LAYERS: dict[Any, _Layer] = {
    F.conv1d: _Layer(nn.Conv1d, _CONV, 3),
    F.conv2d: _Layer(nn.Conv2d, _CONV, 4),
    F.conv3d: _Layer(nn.Conv3d, _CONV, 5),
    F.conv_transpose1d: _Layer(nn.ConvTranspose1d, _DECONV, 3),
    F.conv_transpose2d: _Layer(nn.ConvTranspose2d, _DECONV, 4),
    F.linear: _Layer(nn.Linear, ("input", "weight", "bias"), 2),
}
#: Ops that read only a weight's shape or type: a layer module keeps answering them the same way.
_SHAPE_QUERIES = {("call_method", "size"), ("call_method", "dim"), ("call_function", getattr)}


def is_functional_layer(node: Node) -> bool:
    """Whether ``node`` calls one of the functional convs / linears this module turns into layers."""
    return node.op == "call_function" and node.target in _LAYERS


def _named_args(node: Node, spec: _Layer) -> dict[str, Any] | None:
    """The call's arguments by name (``None`` for one the call leaves out), or ``None`` if they do not fit."""
    if len(node.args) > len(spec.params) or set(node.kwargs) - set(spec.params):
        return None
    named = dict(zip(spec.params, node.args))
    named.update(node.kwargs)
    return {name: named.get(name) for name in spec.params}


def _tensor_of(gm: GraphModule, node: Node) -> Any:
    try:
        return gm.get_parameter(str(node.target))
    except AttributeError:
        try:
            return gm.get_buffer(str(node.target))
        except AttributeError:
            return None


def _holder(gm: GraphModule, target: str) -> nn.Module | None:
    """The module holding the attribute ``target``, or ``None`` when it is a real module of the graph (called as a
    whole): only the bare holders ``GraphModule`` makes for traced-through modules can be replaced."""
    owner = target.rpartition(".")[0]
    if not owner:
        return gm
    module = gm.get_submodule(owner)
    return module if type(module) is nn.Module or getattr(module, "_fx2trt_functional", False) else None


def _only_used_by(attr: Node, node: Node) -> bool:
    """``attr`` (a get_attr node) feeds ``node`` and otherwise only shape queries, and no other node reads it."""
    for user in attr.users:
        if user is not node and (user.op, user.target) not in _SHAPE_QUERIES:
            return False
    same = [n for n in attr.graph.nodes if n.op == "get_attr" and n.target == attr.target]
    return same == [attr]


def layer_refusal(node: Node, gm: GraphModule) -> str | None:
    """Why the functional conv / linear ``node`` cannot become a layer module (``None`` when it can).

    The reasons name what the user can change; for a node that is not a functional conv / linear: ``None``.
    """
    spec = _LAYERS.get(node.target) if node.op == "call_function" else None
    if spec is None:
        return None
    args = _named_args(node, spec)
    if args is None:
        return "its arguments do not match the op's signature"
    weight, bias = args["weight"], args["bias"]
    if not isinstance(weight, Node) or weight.op != "get_attr":
        source = f"by node '{weight.name}'" if isinstance(weight, Node) else "as a constant"
        return (
            f"its weight is computed in forward ({source}), not read from a parameter; one computed from parameters "
            "alone becomes a constant (and is quantized) when example inputs are given, one that depends on the "
            "input has no int8 form"
        )
    tensor = _tensor_of(gm, weight)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != spec.weight_dim or not tensor.is_floating_point():
        return f"its weight '{weight.target}' is not a {spec.weight_dim}-D floating-point parameter"
    if bias is not None and (not isinstance(bias, Node) or bias.op != "get_attr"):
        where = getattr(bias, "name", bias)
        return f"its bias is computed in forward (by node '{where}'), not read from a parameter; pass example inputs"
    for attr in (weight, bias):
        if attr is not None and not _only_used_by(attr, node):
            return (
                f"its parameter '{attr.target}' is also used by other ops, so it is no single layer's; give each "
                "layer a parameter of its own to quantize it"
            )
        if attr is not None and _holder(gm, str(attr.target)) is None:
            return f"the module holding '{attr.target}' is also called as a whole; call the conv as a module"
    computed = [name for name in spec.params[3:] if isinstance(args[name], Node)]
    if computed:
        verb = "is" if len(computed) == 1 else "are"
        return f"its {', '.join(computed)} {verb} computed in forward; pass Python numbers"
    return None


def _caller(node: Node) -> str:
    """The module path of the module whose forward made ``node`` (``""`` when unknown or the root)."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    return str(stack[-1][0]) if stack else ""


def _free(gm: GraphModule, path: str, own: set[str]) -> bool:
    """``path`` can hold a new layer: nothing is there, or a bare holder whose weight / bias no node reads (but the
    layer itself: ``own``)."""
    module: nn.Module = gm
    for part in path.split("."):
        child = module._modules.get(part)
        if child is None:
            return not hasattr(module, part)
        if type(child) is not nn.Module:  # a real module (called as a whole, shared with the model): not ours
            return False
        module = child
    read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    return not ({f"{path}.weight", f"{path}.bias"} & read) - own


def _layer_path(gm: GraphModule, node: Node, weight: str, bias: str | None, taken: set[str]) -> str:
    """Where the layer goes: the owner's path when the weight is its ``weight`` (and the bias its ``bias``); the
    calling module's path for a weight that is no parameter of it (a constant folded from parameters); else the
    weight's own path (``mix.kernel``)."""
    owner, _, attr = weight.rpartition(".")
    if owner and attr == "weight" and bias in (None, f"{owner}.bias"):
        return owner
    caller = _caller(node)
    own = {weight, bias} - {None}
    if caller and not weight.startswith(f"{caller}.") and caller not in taken and _free(gm, caller, own):
        return caller
    return weight


def _make_layer(spec: _Layer, args: dict[str, Any], weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A module computing the call, built on the meta device (no initialisation work) and given its parameters."""
    has_bias, kw = bias is not None, {k: args[k] for k in spec.params[3:] if args[k] is not None}
    if spec.module is nn.Linear:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device="meta")
    elif issubclass(spec.module, nn.modules.conv._ConvTransposeNd):
        groups = int(kw.get("groups", 1))
        shape = (weight.shape[0], weight.shape[1] * groups, tuple(weight.shape[2:]))
        layer = spec.module(*shape, bias=has_bias, device="meta", **kw)
    else:
        groups = int(kw.get("groups", 1))
        shape = (weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]))
        layer = spec.module(*shape, bias=has_bias, device="meta", **kw)
    layer.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        layer.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias, requires_grad=False)
    layer._fx2trt_functional = True  # lets a second functional layer of the same module install beside it
    return layer


def _install(gm: GraphModule, path: str, layer: nn.Module, attrs: Sequence[str]) -> None:
    """Put ``layer`` at ``path``: it takes over the holder there (whose other children and attributes move onto the
    layer; its unread weight / bias are dropped) or the parameter there; the call's parameters leave their old
    holders."""
    for target in attrs:
        owner, _, name = target.rpartition(".")
        holder = gm.get_submodule(owner) if owner else gm
        if target != f"{path}.{name}":
            delattr(holder, name)
    parent: nn.Module = gm
    *parents, name = path.split(".")
    for part in parents:  # a calling module's holder may be gone: put bare holders back
        if part not in parent._modules:
            parent.add_module(part, nn.Module())
        parent = parent._modules[part]
    old = getattr(parent, name, None)
    if isinstance(old, nn.Module):
        for child, module in old.named_children():
            setattr(layer, child, module)
        for attr, param in old.named_parameters(recurse=False):
            if attr not in ("weight", "bias"):
                layer.register_parameter(attr, param)
        for attr, buffer in old.named_buffers(recurse=False):
            if attr not in ("weight", "bias"):
                layer.register_buffer(attr, buffer)
    if old is not None:
        delattr(parent, name)
    setattr(parent, name, layer)


def layers_from_functional(gm: GraphModule) -> list[str]:
    """Turn every functional conv / linear on parameters into a ``call_module`` of a layer module, in place.

    The node of each new layer is named after its module path (as torch.fx names module calls) and keeps the
    functional node's metadata (source line, module stack); calls :func:`layer_refusal` refuses are left alone.

    Returns:
        The module paths of the layers made, in graph order.
    """
    graph, made = gm.graph, []
    taken: set[str] = set()
    for node in list(graph.nodes):
        if not is_functional_layer(node) or layer_refusal(node, gm) is not None:
            continue
        spec = _LAYERS[node.target]
        args = _named_args(node, spec) or {}
        weight_node, bias_node = args["weight"], args["bias"]
        bias_target = str(bias_node.target) if bias_node is not None else None
        path = _layer_path(gm, node, str(weight_node.target), bias_target, taken)
        weight = _tensor_of(gm, weight_node)
        bias = _tensor_of(gm, bias_node) if bias_node is not None else None
        try:
            layer = _make_layer(spec, args, weight, bias)
        except (TypeError, ValueError, RuntimeError):  # arguments the module rejects: the call stays functional
            continue
        _install(gm, path, layer, [str(weight_node.target)] + ([bias_target] if bias_target else []))
        with graph.inserting_before(node):
            call = graph.call_module(path, (args["input"],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        for role, attr in (("weight", weight_node), ("bias", bias_node)):
            if attr is not None and not attr.users:
                graph.erase_node(attr)
            elif attr is not None:
                attr.target = f"{path}.{role}"  # what is left are shape queries: they read the layer's parameter
        made.append(path)
        taken.add(path)
    if made:
        graph.lint()
        gm.recompile()
    return made


__all__ = ["is_functional_layer", "layer_refusal", "layers_from_functional"]
