"""Unary math and power converters: exp / log / sqrt / reciprocal / abs / neg / sign / trigonometric /
erf / floor / ceil (``torch.*``, Tensor methods, ``-x``) and ``x ** y`` (``operator.pow``, ``torch.pow``).

Models converted from ONNX (onnx2torch: Exp, Log, Reciprocal, Pow...) and detection / text-detection heads
(DBNet's differentiable binarization ``1 / (1 + exp(-k (P - T)))``) use them in float. Integer inputs of ops
whose torch result is float (``torch.exp`` of an int tensor) are cast to float32 first, as torch promotes them.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg
from fx2trt_pipeline.converters.registry import key_of, method, register
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import cast, elementwise
from fx2trt_pipeline.trt_types import torch_dtype

#: torch function -> TensorRT UnaryOperation name.
_FUNCTIONS = {
    torch.exp: "EXP",
    torch.log: "LOG",
    torch.sqrt: "SQRT",
    torch.reciprocal: "RECIP",
    torch.abs: "ABS",
    torch.neg: "NEG",
    torch.sign: "SIGN",
    torch.sin: "SIN",
    torch.cos: "COS",
    torch.tan: "TAN",
    torch.asin: "ASIN",
    torch.acos: "ACOS",
    torch.atan: "ATAN",
    torch.erf: "ERF",
    torch.floor: "FLOOR",
    torch.ceil: "CEIL",
}
#: Ops that keep an integer input's dtype in torch (the rest compute in float).
_KEEPS_INTEGERS = ("ABS", "NEG", "SIGN", "FLOOR", "CEIL")
_OPS: dict[Any, str] = {
    **_FUNCTIONS,
    **{method(fn.__name__): op for fn, op in _FUNCTIONS.items()},
    operator.neg: "NEG",
}


def unary(ctx: ConversionContext, name: str, x: ITensor, op: str) -> ITensor:
    """An IUnaryLayer ``op`` (a ``trt.UnaryOperation`` name) on ``x``."""
    if op not in _KEEPS_INTEGERS and not torch_dtype(x.dtype).is_floating_point:
        x = cast(ctx, ctx.name(name, "float"), x, torch.float32)
    layer = ctx.network.add_unary(x, getattr(ctx.trt.UnaryOperation, op))
    return ctx.add(layer, name, f"unary {op.lower()}").get_output(0)


@register(*_OPS)
def convert_unary(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``torch.exp(x)``, ``x.sqrt()``, ``-x``... -> IUnaryLayer."""
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    return unary(ctx, ctx.name(node), x, _OPS[key_of(node)])


@register(operator.pow, torch.pow, method("pow"))
def convert_pow(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> Any:
    """``x ** y`` (tensor or Python exponent / base) -> POW; two Python numbers stay Python."""
    base, exponent = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "exponent")
    if isinstance(base, (int, float)) and isinstance(exponent, (int, float)):
        return base**exponent
    return elementwise(ctx, ctx.name(node), base, exponent, "pow")
