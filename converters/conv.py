"""Convolution and transposed-convolution converters (1-d and 2-d): functional, nn modules, torch.ao
reference modules and torch.ao's fused ConvReLU modules.

The deconvolution weight's per-channel axis is whatever the graph's dequantize says (0 or 1 on the
``(C_in, C_out/groups, *k)`` layout); the converter does not re-decide it.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn import intrinsic as nni
from torch.ao.nn.quantized import reference as nnqr
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, module_of, node_arg
from fx2trt_pipeline.converters.registry import register
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.layer_builders import activation, ints
from fx2trt_pipeline.network.weight_builders import ConvGeometry, conv_nd, dequantized_weight
from fx2trt_pipeline.quantize import int8_ops
from fx2trt_pipeline.quantize.qdq_ops import is_any_dequantize, is_any_quantize

# The integer-arithmetic forms (int8_ops) take F.conv*'s positional arguments plus keyword-only scales
# that only the simulation needs: the same converter serves both (and the aten ops, converters/aten.py).
_FUNCTIONAL_CONV = {F.conv1d: 1, F.conv2d: 2, int8_ops.conv1d: 1, int8_ops.conv2d: 2}
_FUNCTIONAL_DECONV = {
    F.conv_transpose1d: 1,
    F.conv_transpose2d: 2,
    int8_ops.conv_transpose1d: 1,
    int8_ops.conv_transpose2d: 2,
}
_FLOAT_MODULES = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
_REFERENCE_MODULES = (nnqr.Conv1d, nnqr.Conv2d, nnqr.ConvTranspose1d, nnqr.ConvTranspose2d)
_FUSED_RELU = (nni.ConvReLU1d, nni.ConvReLU2d)


def constant_weight_reason(weight: Any) -> str | None:
    """None when a weight node is a constant or a dequantized constant (TensorRT kernels are constants);
    any Q/DQ flavour (ours, PT2E's quantize -> dequantize of a float weight) is looked through."""
    while isinstance(weight, Node) and (is_any_dequantize(weight) or is_any_quantize(weight)):
        weight = weight.args[0]
    if isinstance(weight, Node) and weight.op == "get_attr":
        return None
    return f"the weight must be a constant (get_attr) or a dequantized int8 constant, got {weight}"


def conv_kind(target: Any) -> tuple[bool, int]:
    """``(transposed, spatial dims)`` of a functional or aten convolution target, from its name
    (``conv2d``, ``conv_transpose1d``, ``aten.conv2d.default``)."""
    match = re.search(r"conv(_transpose)?(\d)d", getattr(target, "__name__", "") or str(target))
    if match is None:
        raise ConversionError(f"{target} is not a convolution")
    return match.group(1) is not None, int(match.group(2))


def check_functional_conv(node: Node) -> str | None:
    """Accept F.conv*/conv_transpose* (and their aten ops) whose weight is constant."""
    reason = constant_weight_reason(node_arg(node, 1, "weight"))
    transposed, spatial = conv_kind(node.target)
    if reason is None and transposed:
        padding = node_arg(node, 4, "padding", 0)
        output_padding = node_arg(node, 5, "output_padding", 0)
        reason = _output_padding_reason(padding, output_padding, spatial)
    return reason


def _output_padding_reason(padding: Any, output_padding: Any, spatial: int) -> str | None:
    if isinstance(padding, str):
        return None
    if any(op > p for p, op in zip(ints(padding, spatial), ints(output_padding, spatial))):
        return f"output_padding {output_padding} larger than padding {padding} is not supported"
    return None


def _conv_args(args: tuple, kwargs: dict, transposed: bool) -> dict[str, Any]:
    if transposed:
        names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
        defaults = (None, None, None, 1, 0, 0, 1, 1)
    else:
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        defaults = (None, None, None, 1, 0, 1, 1)
    return {n: arg(args, kwargs, i, n, d) for i, (n, d) in enumerate(zip(names, defaults))}


@register(*_FUNCTIONAL_CONV, *_FUNCTIONAL_DECONV, can_convert=check_functional_conv)
def convert_functional_conv(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``F.conv1d/conv2d/conv_transpose1d/conv_transpose2d(x, w, b, ...)`` -> (de)convolution layer."""
    transposed, spatial = conv_kind(node.target)
    a = _conv_args(args, kwargs, transposed)
    padding = a["padding"] if isinstance(a["padding"], str) else ints(a["padding"], spatial)
    geometry = ConvGeometry(
        ints(a["stride"], spatial),
        padding,
        ints(a["dilation"], spatial),
        int(a["groups"]),
        transposed=transposed,
        output_padding=ints(a["output_padding"], spatial) if transposed else (),
    )
    x = ctx.as_tensor(a["input"], ctx.name(node, "input"))
    return conv_nd(ctx, ctx.name(node), x, a["weight"], a["bias"], geometry)


def _conv_module_reason(module: nn.Module) -> str | None:
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} is not supported (only 'zeros')"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _output_padding_reason(module.padding, module.output_padding, len(module.kernel_size))
    return None


def reference_weight_reason(module: nn.Module) -> str | None:
    """None when a torch.ao reference module's weight is float or symmetric qint8, else the reason."""
    if module.weight_qscheme is None or module.weight_dtype in (torch.float32, torch.float16):
        return None  # reference module with a float weight
    if module.weight_dtype != torch.qint8:
        return f"weights must be torch.qint8 for TensorRT, got {module.weight_dtype}"
    if module.weight_qscheme not in (torch.per_tensor_affine, torch.per_channel_affine):
        return f"weight qscheme {module.weight_qscheme} is not supported"
    if bool(module.weight_zero_point.ne(0).any()):
        return "TensorRT weights are symmetric: weight zero points must be 0 (use a *_symmetric qscheme)"
    return None


def check_conv_module(node: Node) -> str | None:
    """Accept conv modules with zero padding; reference modules need symmetric qint8 weights."""
    module = module_of(node)
    if isinstance(module, _FUSED_RELU):
        module = module[0]
    reason = _conv_module_reason(module)
    if reason is None and isinstance(module, _REFERENCE_MODULES):
        reason = reference_weight_reason(module)
    return reason


def module_weight(ctx: ConversionContext, name: str, module: nn.Module) -> Any:
    """The kernel of a conv / linear module: a dequantized int8 ITensor for quantized reference modules,
    else the float weight tensor."""
    if not isinstance(module, _REFERENCE_MODULES + (nnqr.Linear,)) or _reference_is_float(module):
        return module.weight
    per_channel = module.weight_qscheme in (torch.per_channel_affine, torch.per_channel_symmetric)
    axis = int(module.weight_axis_int) if per_channel else None
    scale = module.weight_scale.detach().to(torch.float32)
    return dequantized_weight(ctx, ctx.name(name, "weight"), reference_int8_weight(module), scale, axis)


def reference_int8_weight(module: nn.Module) -> torch.Tensor:
    """The int8 values torch.ao itself computes for a reference module's weight.

    Taken from the module's own ``get_quantized_weight()`` (``torch.quantize_per_channel``), never
    re-rounded here: with scales of ``amax / 127.5`` every channel's extreme weight sits on a rounding
    tie, and a different rounding of ``w / s`` would give int8 values torch.ao never simulated.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qint8 tensors are deprecated; we only read their int values
        q = module.get_quantized_weight()
    return (q.int_repr() if q.is_quantized else q).detach().to(torch.int8)


def _reference_is_float(module: nn.Module) -> bool:
    return module.weight_qscheme is None or module.weight_dtype in (torch.float32, torch.float16)


def conv_module(ctx: ConversionContext, name: str, x: Any, module: nn.Module) -> ITensor:
    """A conv / deconv module (float or torch.ao reference) through :func:`conv_nd`."""
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    spatial = len(module.kernel_size)
    bias = module.bias.detach() if module.bias is not None else None
    padding = module.padding if isinstance(module.padding, str) else ints(module.padding, spatial)
    geometry = ConvGeometry(
        ints(module.stride, spatial),
        padding,
        ints(module.dilation, spatial),
        module.groups,
        transposed=transposed,
        output_padding=ints(module.output_padding, spatial) if transposed else (),
    )
    x = ctx.as_tensor(x, ctx.name(name, "input"))
    return conv_nd(ctx, name, x, module_weight(ctx, name, module), bias, geometry)


@register(*_FLOAT_MODULES, *_REFERENCE_MODULES, can_convert=check_conv_module)
def convert_conv_module(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """nn.Conv*/ConvTranspose* (float) and torch.ao reference conv modules -> (de)convolution layer."""
    return conv_module(ctx, ctx.name(node), arg(args, kwargs, 0, "input"), ctx.module(node))


@register(*_FUSED_RELU, can_convert=check_conv_module)
def convert_conv_relu(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """torch.ao ConvReLU1d/2d (conv then ReLU) -> convolution + ReLU activation."""
    fused = ctx.module(node)
    y = conv_module(ctx, ctx.name(node, "conv"), arg(args, kwargs, 0, "input"), fused[0])
    return activation(ctx, ctx.name(node), y, "RELU")
