"""The converter registry: one dict from exact FX target to converter; a key registered twice is an error.

What key a node has (``key_of``, ``method``) and its readable name (``describe_key``) are in ``keys.py``;
they are re-exported here, so converter families import everything from this module.

Example:
    >>> import operator
    >>> reg = Registry()
    >>> @reg.register(operator.neg, can_convert=lambda node: None)
    ... def convert_neg(ctx, node, args, kwargs):
    ...     '''-x.'''
    >>> reg.lookup_key(operator.neg).fn.__name__, len(reg)
    ('convert_neg', 1)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from torch.fx import Node

from fx2trt_pipeline.converters.keys import describe_key, key_of, method
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


def _site(fn: ConverterFn) -> object:
    """Where ``fn`` is defined: a module executed again (reload, doctest import) defines the same converter."""
    code = getattr(fn, "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else id(fn)


class Registry:
    """Exact-target converter registry; registering a key twice is an error."""

    def __init__(self) -> None:
        self._table: dict[Hashable, Converter] = {}

    def register(
        self, target: Hashable, *more_targets: Hashable, can_convert: CanConvert | None = None
    ) -> Callable[[ConverterFn], ConverterFn]:
        """Decorator registering a converter for one or more exact targets; its family is its module's name.

        Raises:
            InternalError: a target is already registered (two converters would race for it).
        """

        def decorate(fn: ConverterFn) -> ConverterFn:
            family = fn.__module__.rsplit(".", 1)[-1]
            for key in (target, *more_targets):
                if key in self._table and _site(self._table[key].fn) != _site(fn):
                    first, second = self._table[key].fn.__qualname__, fn.__qualname__
                    raise InternalError(f"Converter for {describe_key(key)} registered twice: {first} and {second}")
                self._table[key] = Converter(key, fn, family, can_convert)
            return fn

        return decorate

    def lookup_key(self, key: Hashable) -> Converter | None:
        """The registration for ``key`` or ``None`` (also for unhashable targets)."""
        try:
            return self._table.get(key)
        except TypeError:
            return None

    def lookup(self, node: Node) -> Converter | None:
        """The registration for an FX node (exact target / exact module class) or ``None``."""
        key = key_of(node)
        return None if key is None else self.lookup_key(key)

    def __iter__(self) -> Iterator[Converter]:
        return iter(self._table.values())

    def __len__(self) -> int:
        return len(self._table)


#: The registry every converter family registers into.
REGISTRY = Registry()
register = REGISTRY.register
__all__ = ["REGISTRY", "CanConvert", "Converter", "ConverterFn", "Registry", "describe_key", "key_of", "method"]
