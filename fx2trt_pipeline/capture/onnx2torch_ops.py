"""onnx2torch's node modules lowered to the plain torch ops the quantizer and the converters know.

A graph from ``onnx2torch.convert`` calls one module per ONNX node (``OnnxResize``, ``OnnxReshape``,
``OnnxBinaryMathOperation``...) whose shape, scale and index arguments are tensors computed in the graph.
With those arguments known (static values from :mod:`.static_values`) each module becomes the torch op it
runs: ``F.interpolate`` with Python sizes, ``torch.reshape`` with Python ints, ``operator.mul`` with a Python
number. The replacement computes what the module computes for every input of the example's shape (the batch
may change: a reshape entry that follows the batch becomes ``-1`` or ``x.size(0)``). A module that cannot be
lowered (its arguments come from the data, an unsupported mode) stays as it is, and conversion lists it.

Static nodes (``Constant``, ``Shape``, ``ConstantOfShape`` of a static shape, anchor arithmetic on
constants) never reach these lowerings: they are folded into constants first (:mod:`.foreign`).

Shape and indexing modules live in :mod:`.onnx2torch_shape`; both register into :data:`LOWERINGS`.

Example:
    >>> sorted(LOWERINGS)[:3]
    ['OnnxBinaryMathOperation', 'OnnxCast', 'OnnxClip']
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.capture.graph_rebuild import NotLowered, Rebuild
from fx2trt_pipeline.errors import InternalError

#: ``lower(rb, node, module, args) -> new value``; ``args`` are the module's forward arguments by name.
Lowering = Callable[[Rebuild, Node, nn.Module, dict[str, Any]], Any]
#: onnx2torch module class name -> its lowering.
LOWERINGS: dict[str, Lowering] = {}


def lowers(*class_names: str) -> Callable[[Lowering], Lowering]:
    """Register a lowering for onnx2torch module classes (by class name: onnx2torch stays optional).

    Raises:
        InternalError: a class already has a lowering (two would race for it).
    """

    def decorate(fn: Lowering) -> Lowering:
        for name in class_names:
            if name in LOWERINGS and LOWERINGS[name].__qualname__ != fn.__qualname__:
                raise InternalError(
                    f"onnx2torch's {name} lowered twice: {LOWERINGS[name].__qualname__}, {fn.__qualname__}"
                )
            LOWERINGS[name] = fn
        return fn

    return decorate


def lower_onnx2torch(rb: Rebuild, node: Node) -> Any:
    """The new value standing for the onnx2torch module call ``node``.

    Raises:
        NotLowered: no lowering for this module, or its arguments do not allow one (the message says why).
    """
    module = rb.modules[str(node.target)]
    lower = LOWERINGS.get(type(module).__name__)
    if lower is None:
        raise NotLowered(f"onnx2torch's {type(module).__name__} has no lowering to torch ops")
    bound = inspect.signature(module.forward).bind(*node.args, **node.kwargs)
    return lower(rb, node, module, dict(bound.arguments))


def _old_style_broadcast(module: nn.Module) -> None:
    if getattr(module, "broadcast", None) == 1 and getattr(module, "axis", None) is not None:
        raise NotLowered("old-style (opset < 7) broadcast with an axis is not lowered")


_ARITHMETIC = {torch.add: operator.add, torch.sub: operator.sub, torch.mul: operator.mul}


@lowers("OnnxBinaryMathOperation")
def lower_binary(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Add / Sub / Mul / Div -> ``operator.add / sub / mul / truediv`` (one-element constants as numbers)."""
    _old_style_broadcast(module)
    a, b = args["first"], args["second"]
    fn = module.math_op_function
    target = _ARITHMETIC.get(fn)
    if target is None:  # onnx2torch's Div: true division of floats, truncation of integers
        if not any(d is not None and d.is_floating_point for d in (rb.dtype(a), rb.dtype(b))):
            raise NotLowered("integer division of data tensors is not lowered")
        target = operator.truediv
    return rb.call(target, rb.operand(a, b), rb.operand(b, a), name=node.name)


@lowers("OnnxPow")
def lower_pow(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Pow -> ``operator.pow`` (a one-element exponent as a number)."""
    _old_style_broadcast(module)
    base, exponent = args["input_tensor"], args["exponent"]
    return rb.call(operator.pow, rb.operand(base, exponent), rb.operand(exponent, base), name=node.name)


@lowers("OnnxFunction")
def lower_function(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Exp, Log, Abs, Sin, Cos, Tanh... -> the torch function the module calls."""
    return rb.call(module.function, rb.new(args["input_tensor"]), name=node.name)


_UNARY = {"OnnxReciprocal": torch.reciprocal, "OnnxNeg": operator.neg, "OnnxSqrt": torch.sqrt, "OnnxErf": torch.erf}


@lowers(*_UNARY)
def lower_unary(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Reciprocal / Neg / Sqrt / Erf -> ``torch.reciprocal`` / ``operator.neg`` / ``torch.sqrt`` / ``torch.erf``."""
    (x,) = args.values()
    return rb.call(_UNARY[type(module).__name__], rb.new(x), name=node.name)


@lowers("OnnxMatMul")
def lower_matmul(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """MatMul -> ``torch.matmul``."""
    return rb.call(torch.matmul, rb.tensor_operand(args["x"]), rb.tensor_operand(args["y"]), name=node.name)


@lowers("OnnxCopyIdentity")
def lower_identity(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Identity: the input itself."""
    return rb.new(args["x"])


@lowers("OnnxClip")
def lower_clip(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Clip -> ``torch.clamp`` with Python bounds."""
    bounds = [None if v is None else float(v) for v in (module.min_val, module.max_val)]
    return rb.call(torch.clamp, rb.new(args["input_tensor"]), *bounds, name=node.name)


@lowers("OnnxCast")
def lower_cast(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Cast -> nothing when the dtype is already right, else ``x.to(dtype)``."""
    x = args["input_tensor"]
    if rb.dtype(x) == module.torch_dtype:
        return rb.new(x)
    return rb.method("to", rb.new(x), module.torch_dtype, name=node.name)


_RESIZE_MODES = {"nearest": "nearest", "linear": "bilinear"}


@lowers("OnnxResize", "OnnxResizeV10")
def lower_resize(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Resize (nearest / linear, 2-d, by scales or sizes) -> ``F.interpolate`` with Python sizes or scales.

    The module passes only the spatial part of ``scales`` / ``sizes`` to ``F.interpolate`` (the batch entry
    of ``sizes`` may follow the batch size); the mode and ``align_corners`` are the module's.
    """
    inner = module._resize if type(module).__name__ == "OnnxResizeV10" else module
    x = args["input_tensor"]
    if len(rb.shape(x)) != 4 or inner.onnx_mode not in _RESIZE_MODES:
        raise NotLowered(f"only 2-d nearest / linear resizes are lowered (mode {inner.onnx_mode!r})")
    roi = args.get("roi")
    if roi is not None and not inner.ignore_roi and rb.static(roi, "roi").numel():
        raise NotLowered("a region of interest (tf_crop_and_resize) is not lowered")
    size = scale = None
    if args.get("sizes") is not None and rb.static_numel(args["sizes"]):
        one, two = rb.ints_by_batch(args["sizes"], "sizes")
        if one[2:] != two[2:]:
            raise NotLowered("its spatial sizes change with the batch size")
        size = tuple(one[2:])
    elif args.get("scales") is not None and rb.static_numel(args["scales"]):
        scale = tuple(float(s) for s in rb.static(args["scales"], "scales").reshape(-1).tolist()[2:])
    mode = _RESIZE_MODES[inner.onnx_mode]
    return rb.call(
        F.interpolate,
        rb.new(x),
        size=size,
        scale_factor=scale,
        mode=mode,
        align_corners=inner.align_corners,
        name=node.name,
    )


@lowers("OnnxGlobalAveragePool", "OnnxGlobalAveragePoolWithKnownInputShape")
def lower_global_average_pool(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """GlobalAveragePool -> ``F.adaptive_avg_pool2d(x, 1)`` on 4-d inputs (a pooling layer, quantizable)."""
    x = args["input_tensor"]
    if len(rb.shape(x)) != 4:
        raise NotLowered("only 4-d global average pooling is lowered")
    return rb.call(F.adaptive_avg_pool2d, rb.new(x), 1, name=node.name)


_REDUCTIONS = {"ReduceMean": torch.mean, "ReduceSum": torch.sum}


@lowers("OnnxReduceStaticAxes", "OnnxReduceSumStaticAxes")
def lower_reduce(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """ReduceMean / ReduceSum with static axes -> ``torch.mean`` / ``torch.sum``."""
    kind = getattr(module, "operation_type", "ReduceSum")
    if kind not in _REDUCTIONS:
        raise NotLowered(f"{kind} is not lowered (ReduceMean and ReduceSum are)")
    x = args["input_tensor"]
    axes = list(module.axes or range(len(rb.shape(x))))
    if not axes and not module.keepdims:
        return rb.call(_REDUCTIONS[kind], rb.new(x), name=node.name)
    return rb.call(_REDUCTIONS[kind], rb.new(x), dim=axes, keepdim=bool(module.keepdims), name=node.name)


@lowers("OnnxMinMax", "OnnxSum", "OnnxMean")
def lower_variadic(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Min / Max / Sum / Mean of several tensors -> a chain of ``torch.minimum`` / ``maximum`` / ``+``."""
    inputs = [rb.tensor_operand(t) for t in args["input_tensors"]]
    kind = module._op_type
    fn = {"Min": torch.minimum, "Max": torch.maximum}.get(kind, operator.add)
    out = inputs[0]
    for i, other in enumerate(inputs[1:]):
        last = i == len(inputs) - 2 and kind != "Mean"
        out = rb.call(fn, out, other, name=node.name if last else f"{node.name}_{i}")
    if kind == "Mean" and len(inputs) > 1:
        out = rb.call(operator.truediv, out, float(len(inputs)), name=node.name)
    return out


@lowers("OnnxPadStatic")
def lower_pad(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Pad with static pads -> ``F.pad``."""
    pads = [int(p) for p in module.pads]
    return rb.call(
        F.pad,
        rb.new(args["input_tensor"]),
        pads,
        mode=module.mode,
        value=float(module.constant_value),
        name=node.name,
    )


__all__ = ["LOWERINGS", "Lowering", "lower_onnx2torch", "lowers"]
