"""Argument helpers shared by the converter families (no registrations here).

Converters see ``args``/``kwargs`` with nodes replaced by converted values; ``can_convert`` checks
see the raw FX arguments. Both use the same positional-or-keyword lookup.

Example:
    >>> from fx2trt_pipeline.converters.common import arg
    >>> arg((1, 2), {"dim": 3}, 2, "dim")
    3
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.fx import Node

from fx2trt_pipeline.errors import ConversionError

_MISSING = object()


def arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any = _MISSING) -> Any:
    """The argument at position ``index`` or keyword ``name`` (``default`` when absent)."""
    if index < len(args):
        return args[index]
    if name in kwargs:
        return kwargs[name]
    if default is _MISSING:
        raise ConversionError(f"missing argument {name!r} (position {index})")
    return default


def node_arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    """The raw FX argument of ``node`` at ``index`` / keyword ``name``."""
    return arg(node.args, dict(node.kwargs), index, name, default)


def attr_value(value: Any) -> Any:
    """The tensor behind a ``get_attr`` node (other values are returned unchanged)."""
    if isinstance(value, Node) and value.op == "get_attr":
        obj: Any = value.graph.owning_module
        for part in str(value.target).split("."):
            obj = getattr(obj, part)
        return obj
    return value


def is_constant(value: Any) -> bool:
    """True for a build-time constant: a get_attr node, a tensor or a Python number."""
    if isinstance(value, Node):
        return value.op == "get_attr"
    return isinstance(value, (torch.Tensor, int, float))


def module_of(node: Node) -> torch.nn.Module:
    """The submodule a ``call_module`` node calls."""
    return node.graph.owning_module.get_submodule(str(node.target))


def dims_arg(value: Any) -> list[int] | None:
    """``dim`` arguments as a list of ints (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def is_trt_tensor(value: Any) -> bool:
    """True for a TensorRT ITensor (not a torch tensor, not a Python value)."""
    return hasattr(value, "is_network_input")
