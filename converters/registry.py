"""The converter registry: one dict from exact FX target to converter.

Keys are exactly what FX puts in ``node.target`` (plus the opcode where a target alone is ambiguous):

* ``call_function``: the function or OpOverload itself (``operator.add``, ``torch.cat``,
  ``torch.ops.fx2trt.quantize.default``);
* ``call_method``: ``("call_method", "<name>")`` (``("call_method", "view")``);
* ``call_module``: the module class (``torch.nn.Conv2d``). Lookup uses the *exact* class, never a base
  class: a torch.ao reference ``Conv2d`` subclasses ``nn.Conv2d``, and treating it as a float conv would
  silently drop its weight quantization.

Example:
    >>> import operator
    >>> from fx2trt_pipeline.converters.registry import Registry
    >>> reg = Registry()
    >>> @reg.register(operator.neg, can_convert=lambda node: None)
    ... def convert_neg(ctx, node, args, kwargs):
    ...     '''-x.'''
    >>> reg.lookup_key(operator.neg).fn.__name__
    'convert_neg'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Hashable, Iterator

import torch
from torch.fx import Node

from fx2trt_pipeline.errors import InternalError

#: ``can_convert(node) -> None`` when the converter accepts the node, else the reason it does not.
CanConvert = Callable[[Node], str | None]
#: ``convert(ctx, node, args, kwargs) -> value``; args/kwargs hold converted values, not nodes.
ConverterFn = Callable[..., Any]


@dataclass(frozen=True)
class Converter:
    """One registration: the key, the converter function, its family and its acceptance check."""

    key: Hashable
    fn: ConverterFn
    family: str
    can_convert: CanConvert | None = None


def method(name: str) -> tuple[str, str]:
    """The registry key of the Tensor method ``name`` (``method("view")``)."""
    return ("call_method", name)


def key_of(node: Node) -> Hashable | None:
    """The registry key of an FX node, or ``None`` for placeholder / get_attr / output."""
    if node.op == "call_function":
        return node.target
    if node.op == "call_method":
        return method(str(node.target))
    if node.op == "call_module":
        owner = node.graph.owning_module
        if owner is None:
            return None
        return type(owner.get_submodule(str(node.target)))
    return None


_NAMESPACES = (
    ("torch.nn.functional", "torch.nn.functional"),
    ("torch", "torch"),
    ("operator", "operator"),
    ("builtins", "builtins"),
)


_CLASS_NAMESPACES = (
    ("torch.nn", "torch.nn"),
    ("torch.ao.nn.quantized.reference", "torch.ao.nn.quantized.reference"),
    ("torch.ao.nn.intrinsic", "torch.ao.nn.intrinsic"),
)


def _public_name(obj: Any, namespaces: tuple[tuple[str, str], ...] = _NAMESPACES) -> str | None:
    """``namespace.attr`` of an object reachable from one of ``namespaces`` (first match wins)."""
    import importlib

    for label, module_name in namespaces:
        module = importlib.import_module(module_name)
        for attr in dir(module):
            if not attr.startswith("__") and getattr(module, attr, None) is obj:
                return f"{label}.{attr}"
    return None


def describe_key(key: Hashable) -> str:
    """A readable name for a key: ``torch.nn.modules.conv.Conv2d``, ``Tensor.view``, ``operator.add``."""
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "call_method":
        return f"Tensor.{key[1]}"
    if isinstance(key, type):
        return _public_name(key, _CLASS_NAMESPACES) or f"{key.__module__}.{key.__qualname__}"
    if isinstance(key, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return f"torch.ops.{key}"
    return _public_name(key) or getattr(key, "__qualname__", None) or str(key)


def _same_source(a: ConverterFn, b: ConverterFn) -> bool:
    """True when ``b`` is ``a`` defined again by re-executing the same module (reload, doctest import)."""
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (code_a is not None and code_b is not None and code_a.co_filename == code_b.co_filename
            and code_a.co_firstlineno == code_b.co_firstlineno)


class Registry:
    """Exact-target converter registry; registering a key twice is an error."""

    def __init__(self) -> None:
        self._table: dict[Hashable, Converter] = {}

    def register(
        self, target: Hashable, *more_targets: Hashable, can_convert: CanConvert | None = None
    ) -> Callable[[ConverterFn], ConverterFn]:
        """Decorator registering a converter for one or more exact targets.

        The family is the converter's module name (``conv`` for ``converters/conv.py``).

        Raises:
            InternalError: a target is already registered (two converters would race for it).
        """

        def decorate(fn: ConverterFn) -> ConverterFn:
            family = fn.__module__.rsplit(".", 1)[-1]
            for key in (target, *more_targets):
                if key in self._table and not _same_source(self._table[key].fn, fn):
                    raise InternalError(
                        f"Converter for {describe_key(key)} registered twice: "
                        f"{self._table[key].fn.__qualname__} and {fn.__qualname__}"
                    )
                self._table[key] = Converter(key, fn, family, can_convert)
            return fn

        return decorate

    def lookup_key(self, key: Hashable) -> Converter | None:
        """The registration for ``key`` or ``None``."""
        try:
            return self._table.get(key)
        except TypeError:  # unhashable target: nothing can be registered for it
            return None

    def lookup(self, node: Node) -> Converter | None:
        """The registration for an FX node (exact target / exact module class) or ``None``."""
        key = key_of(node)
        return None if key is None else self.lookup_key(key)

    def __iter__(self) -> Iterator[Converter]:
        return iter(self._table.values())

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: Hashable) -> bool:
        return self.lookup_key(key) is not None


#: The registry every converter family registers into.
REGISTRY = Registry()
register = REGISTRY.register
