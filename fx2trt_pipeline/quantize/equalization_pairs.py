"""Which conv/linear layer pairs cross-layer equalization can balance, and why a pair was not taken.

A pair is ``first -> [link] -> second``: two conv or linear layers (zeros padding mode) whose channels match,
joined by single-use tensors through at most one link that per-channel scaling commutes with (ReLU, ReLU6 /
Hardtanh(0, b), identity) and any number of zero pads (``nn.ZeroPad2d``, ``F.pad(x, p)``: ``0 * s = 0``). A
pad with another value, Hardswish, sigmoid or anything else in between blocks the pair;
:func:`unpaired_reasons` names the node in the way (the build prints the first one when no pair was found).

Example:
    >>> from fx2trt_pipeline.capture import capture
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU6(), nn.ZeroPad2d(1), nn.Conv2d(8, 8, 3, groups=8)).eval()
    >>> [(a.target, link.target, b.target) for a, link, b in find_pairs(capture(m))]
    [('0', '1', '3')]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_RELU = (nn.ReLU,)


def groups_of(module: nn.Module) -> int:
    """Convolution groups of a layer (1 for linear layers)."""
    return getattr(module, "groups", 1)


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one group per input channel."""
    groups = groups_of(module)
    return isinstance(module, nn.Conv2d | nn.Conv1d | nn.Conv3d) and groups > 1 and groups == module.in_channels


def _layer(gm: GraphModule, node: object) -> nn.Module | None:
    if isinstance(node, Node) and node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if type(module) in _LAYERS and getattr(module, "padding_mode", "zeros") == "zeros":
            return module
    return None


def link_kind(gm: GraphModule, node: Node) -> tuple[str, float | None] | None:
    """``("relu", None)`` / ``("relu6", upper bound)`` for a link equalization can pass, else None."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if isinstance(module, _RELU):
            return "relu", None
        if isinstance(module, nn.Identity):
            return "identity", None
        if isinstance(module, nn.Hardtanh) and module.min_val == 0.0:  # nn.ReLU6 is a Hardtanh(0, 6)
            return "relu6", float(module.max_val)
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu) and not node.kwargs.get("inplace", False):
            return "relu", None
        if node.target is F.relu6:
            return "relu6", 6.0
        if node.target is F.hardtanh and len(node.args) == 3 and node.args[1] == 0.0:
            return "relu6", float(node.args[2])
    return None


def _is_zero_pad(gm: GraphModule, node: Node) -> bool:
    """A constant pad with zeros (``nn.ZeroPad2d``, ``nn.ConstantPad2d(p, 0)``, ``F.pad(x, p)``): it commutes with
    per-channel scaling. Padding that adds channels changes the channel count and fails the pair's channel match."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return isinstance(module, nn.modules.padding._ConstantPadNd) and float(module.value) == 0.0
    if node.op == "call_function" and node.target in (F.pad, torch.constant_pad_nd):
        args = list(node.args) + [None] * 4
        mode = node.kwargs.get("mode", args[2] if node.target is F.pad else "constant") or "constant"
        value = node.kwargs.get("value", args[3] if node.target is F.pad else args[2])
        return mode == "constant" and (value is None or float(value) == 0.0)
    return False


def _describe(gm: GraphModule, node: Node) -> str:
    """How a node between two layers reads in a reason (``"nn.Hardswish 'features_1_2'"``, ``"pad with 1.0"``)."""
    if node.op == "call_module":
        return f"{type(gm.get_submodule(str(node.target))).__name__} {node.name!r}"
    name = getattr(node.target, "__name__", str(node.target))
    if node.target in (F.pad, torch.constant_pad_nd):
        return f"{name} {node.name!r} with a non-zero value or a non-constant mode"
    return f"{name} {node.name!r}"


def _channels_match(first: nn.Module, second: nn.Module) -> bool:
    out = first.out_features if isinstance(first, nn.Linear) else first.out_channels
    inp = second.in_features if isinstance(second, nn.Linear) else second.in_channels
    same_kind = isinstance(first, nn.Linear) == isinstance(second, nn.Linear)
    return out == inp and same_kind


#: Nodes looked through after a layer when explaining why it pairs with no next layer.
_REASON_DEPTH = 4


def _chain(gm: GraphModule, node: Node) -> tuple[Node | None, Node | None, Node | None]:
    """From layer ``node``: ``(link, second, blocker)`` along single-use nodes (zero pads seen through).

    ``second`` is the next layer when only one link (ReLU, ReLU6, identity) and zero pads lie between; otherwise
    ``blocker`` is the first node in the way (``None`` too when the path forks or ends).
    """
    link, current = None, node
    for _ in range(_REASON_DEPTH):
        if len(current.users) != 1:
            return link, None, None
        user = next(iter(current.users))
        if not user.args or user.args[0] is not current:
            return link, None, None
        if _layer(gm, user) is not None:
            return link, user, None
        if link is None and link_kind(gm, user) is not None:
            link = user
        elif not _is_zero_pad(gm, user):
            return link, None, user
        current = user
    return link, None, None


def find_pairs(gm: GraphModule) -> list[tuple[Node, Node | None, Node]]:
    """``(first, link or None, second)`` chains where each tensor between them has a single user.

    Zero pads may sit anywhere between the two layers (they commute with the channel scales).
    """
    pairs = []
    for node in gm.graph.nodes:
        first = _layer(gm, node)
        if first is None:
            continue
        link, user, _ = _chain(gm, node)
        if user is not None and _channels_match(first, gm.get_submodule(str(user.target))):
            pairs.append((node, link, user))
    return pairs


def unpaired_reasons(gm: GraphModule, depthwise_only: bool = False) -> list[str]:
    """Why layers that lead to a next layer were not paired: the node in the way, one line each.

    Example:
        >>> from fx2trt_pipeline.capture import capture
        >>> m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Hardswish(), nn.Conv2d(8, 8, 3, groups=8)).eval()
        >>> unpaired_reasons(capture(m))
        ["0 -> 2: Hardswish '_1' between them is neither ReLU, ReLU6, identity nor a zero pad"]
    """
    reasons = []
    for node in gm.graph.nodes:
        if _layer(gm, node) is None:
            continue
        _link, _second, blocker = _chain(gm, node)
        if blocker is None or len(blocker.users) != 1:
            continue
        after = next(iter(blocker.users))
        target = after if _layer(gm, after) is not None else None
        if target is None and len(after.users) == 1 and _is_zero_pad(gm, after):
            after = next(iter(after.users))
            target = after if _layer(gm, after) is not None else None
        if target is None or (depthwise_only and not is_depthwise(gm.get_submodule(str(target.target)))):
            continue
        reasons.append(
            f"{node.target} -> {target.target}: {_describe(gm, blocker)} between them is neither ReLU, ReLU6, "
            "identity nor a zero pad"
        )
    return reasons


__all__ = ["find_pairs", "groups_of", "is_depthwise", "link_kind", "unpaired_reasons"]
