"""Elementwise arithmetic converters: add / sub / mul / div (and floordiv for shape arithmetic) with
tensors and Python scalars, as ``operator.*``, ``torch.*``, Tensor methods and in-place forms.

Two Python values (e.g. static sizes from ``x.size(1) * x.size(2)``) are computed in Python and never
reach TensorRT.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, is_trt_tensor, node_arg
from fx2trt_pipeline.converters.registry import method, register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext
from fx2trt_pipeline.network.layer_builders import elementwise

_PYTHON_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
}


def _binary(ctx: ConversionContext, node: Node, a: Any, b: Any, op: str) -> Any:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return _PYTHON_OPS[op](a, b)
    return elementwise(ctx, ctx.name(node), a, b, op)


def _operands(args: tuple, kwargs: dict) -> tuple[Any, Any]:
    return arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "other")


@register(operator.add, operator.iadd, torch.add, method("add"), method("add_"))
def convert_add(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``a + b`` (``alpha`` scales ``b`` as torch.add does) -> SUM."""
    return _with_alpha(ctx, node, args, kwargs, "add")


@register(operator.sub, operator.isub, torch.sub, method("sub"), method("sub_"))
def convert_sub(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``a - b`` (``alpha`` scales ``b``) -> SUB."""
    return _with_alpha(ctx, node, args, kwargs, "sub")


def _with_alpha(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict, op: str) -> Any:
    a, b = _operands(args, kwargs)
    alpha = kwargs.get("alpha", 1)
    if alpha != 1:
        b = _scale(ctx, node, b, alpha)
    return _binary(ctx, node, a, b, op)


def _scale(ctx: ConversionContext, node: Node, value: Any, alpha: Any) -> Any:
    if isinstance(value, (int, float)):
        return value * alpha
    return elementwise(ctx, ctx.name(node, "alpha"), value, alpha, "mul")


@register(operator.mul, operator.imul, torch.mul, method("mul"), method("mul_"))
def convert_mul(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``a * b`` -> PROD."""
    return _binary(ctx, node, *_operands(args, kwargs), "mul")


def check_div(node: Node) -> str | None:
    """Accept true division and floor rounding; refuse ``rounding_mode='trunc'``."""
    mode = node_arg(node, 2, "rounding_mode", None)
    return None if mode in (None, "floor") else f"rounding_mode={mode!r} is not supported"


@register(operator.truediv, operator.itruediv, torch.div, method("div"), method("div_"), can_convert=check_div)
def convert_div(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``a / b`` -> DIV (``rounding_mode='floor'`` -> FLOOR_DIV)."""
    floor = arg(args, kwargs, 2, "rounding_mode", None) == "floor"
    return _binary(ctx, node, *_operands(args, kwargs), "floordiv" if floor else "div")


@register(operator.floordiv)
def convert_floordiv(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``a // b`` -> FLOOR_DIV (Python ints stay Python ints)."""
    return _binary(ctx, node, *_operands(args, kwargs), "floordiv")


@register(operator.mod)
def convert_mod(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``a % b`` on Python values (shape arithmetic such as window padding); tensors are refused."""
    a, b = _operands(args, kwargs)
    if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        raise ConversionError("tensor % is not supported; only Python values (static shapes)")
    return a % b


@register(operator.eq, operator.ne)
def convert_compare(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``a == b`` / ``a != b``: Python values (shape checks) compare in Python; tensors ``==`` -> EQUAL."""
    a, b = args[0], args[1]
    compare = operator.eq if node.target is operator.eq else operator.ne
    if not (is_trt_tensor(a) or is_trt_tensor(b) or isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)):
        return compare(a, b)
    if compare is operator.ne:
        raise ConversionError("tensor != tensor is not supported; compare with == and invert")
    return elementwise(ctx, ctx.name(node), a, b, "eq")


@register(torch.minimum)
def convert_minimum(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``torch.minimum(a, b)`` -> MIN (e.g. the per-channel clamp bound of cross-layer equalization)."""
    return _binary(ctx, node, *_operands(args, kwargs), "min")


@register(torch.maximum)
def convert_maximum(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``torch.maximum(a, b)`` -> MAX."""
    return _binary(ctx, node, *_operands(args, kwargs), "max")
