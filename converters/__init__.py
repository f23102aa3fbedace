"""Converters from FX nodes to TensorRT layers, one module per op family, registered by exact target.

Registration is explicit: importing this package imports each family module below, whose
``@register`` decorators fill :data:`REGISTRY`. :func:`supported_ops` lists the table (also written to
``docs/supported_ops.md`` by ``scripts/gen_supported_ops.py``).

Example:
    >>> import operator
    >>> from fx2trt_pipeline.converters import REGISTRY, supported_ops
    >>> REGISTRY.lookup_key(operator.add).fn.__name__
    'convert_add'
    >>> ("operator.add", "elementwise") in supported_ops()
    True
"""

from __future__ import annotations

from fx2trt_pipeline.converters import (  # noqa: F401
    activation,
    aten,
    conv,
    elementwise,
    linear,
    misc,
    normalization,
    padding,
    pooling,
    qdq,
    reduce,
    resize,
    shape,
    tensor_ops,
    torchvision_ops,
    transformer,
    unary,
)
from fx2trt_pipeline.converters.registry import REGISTRY, Converter, describe_key, register

FAMILIES = (
    "qdq",
    "conv",
    "linear",
    "activation",
    "pooling",
    "elementwise",
    "unary",
    "shape",
    "resize",
    "reduce",
    "normalization",
    "transformer",
    "torchvision_ops",
    "padding",
    "tensor_ops",
    "misc",
    "aten",
)


def supported_ops() -> list[tuple[str, str]]:
    """Rows ``(target, family)`` for every registered converter key, sorted by family then target."""
    order = {family: i for i, family in enumerate(FAMILIES)}
    rows = [(describe_key(c.key), c.family) for c in REGISTRY]
    return sorted(rows, key=lambda row: (order.get(row[1], len(order)), row[0]))


__all__ = ["REGISTRY", "Converter", "FAMILIES", "register", "supported_ops"]
