"""Converter registry keys: the key of an FX node, and its readable name for error tables and docs.

Keys are what FX puts in ``node.target``: the function or OpOverload for ``call_function``,
``("call_method", "<name>")`` for ``call_method``, the module class for ``call_module``. Module keys are the
*exact* class, never a base class: a torch.ao reference ``Conv2d`` subclasses ``nn.Conv2d``, and treating it
as a float conv would silently drop its weight quantization.

Example:
    >>> import operator, torch
    >>> describe_key(operator.add), describe_key(method("view")), describe_key(torch.nn.Conv2d)
    ('operator.add', 'Tensor.view', 'torch.nn.Conv2d')
"""

from __future__ import annotations

import importlib
from collections.abc import Hashable
from typing import Any

import torch
from torch.fx import Node

# Searched in order, so a function gets its shortest public spelling (F.relu before torch.relu).
_NAMESPACES = ("torch.nn.functional", "torch", "operator", "builtins")
_CLASS_NAMESPACES = ("torch.nn", "torch.ao.nn.quantized.reference", "torch.ao.nn.intrinsic")


def method(name: str) -> tuple[str, str]:
    """The registry key of the Tensor method ``name`` (``method("view")``)."""
    return ("call_method", name)


def key_of(node: Node) -> Hashable | None:
    """The registry key of an FX node, or ``None`` for placeholder / get_attr / output."""
    if node.op == "call_method":
        return method(str(node.target))
    owner = node.graph.owning_module
    if node.op == "call_module" and owner is not None:
        return type(owner.get_submodule(str(node.target)))
    return node.target if node.op == "call_function" else None


def _public_name(obj: Any, namespaces: tuple[str, ...]) -> str | None:
    """``namespace.attr`` of an object reachable from one of ``namespaces`` (first match wins)."""
    for module_name in namespaces:
        module = importlib.import_module(module_name)
        for attr in dir(module):
            if not attr.startswith("__") and getattr(module, attr, None) is obj:
                return f"{module_name}.{attr}"
    return None


def describe_key(key: Hashable) -> str:
    """A readable name for a key: ``torch.nn.Conv2d``, ``Tensor.view``, ``operator.add``."""
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "call_method":
        return f"Tensor.{key[1]}"
    if isinstance(key, type):
        return _public_name(key, _CLASS_NAMESPACES) or f"{key.__module__}.{key.__qualname__}"
    if isinstance(key, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return f"torch.ops.{key}"
    return _public_name(key, _NAMESPACES) or getattr(key, "__qualname__", None) or str(key)


__all__ = ["describe_key", "key_of", "method"]
