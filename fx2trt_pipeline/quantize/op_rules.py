"""Per-op quantization behaviour as a typed table (TensorRT's Q/DQ placement rules).

Each rule says which activation arguments of an op are quantized, where its weight's per-channel
axis is, and whether the op is *transparent*: Q/DQ commutes with it (MaxPool, Concat), so a request to
quantize its output is served by quantizing its inputs with one shared scale.

Example:
    >>> from torch import nn
    >>> from fx2trt_pipeline.quantize.op_rules import rule_for_module
    >>> rule_for_module(nn.Conv2d(3, 8, 3)).kind
    'conv'
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline.quantize import int8_ops


@dataclass(frozen=True)
class OpRule:
    """How one op takes part in quantization.

    Attributes:
        kind: op kind named in ``QuantConfig.quantize_ops`` (``"maxpool"``/``"cat"`` are always on).
        act_args: positions of the activation arguments to quantize.
        weight_axis: per-channel axis of the module weight; ``None`` for ops without weights.
            ``-1`` means "ConvTranspose: take ``QuantConfig.deconv_weight_axis``".
        transparent: Q/DQ commutes with the op; its inputs are quantized instead of its output.
        functional: the torch.nn.functional op a quantized module is lowered to.
        weight_arg: position of the weight argument of an op that takes its weight as an input
            (aten ops of exported graphs); ``None`` for modules, whose weight is an attribute.
    """

    kind: str
    act_args: tuple[int, ...] = (0,)
    weight_axis: int | None = None
    transparent: bool = False
    functional: object | None = None
    weight_arg: int | None = None


DECONV_AXIS = -1

MODULE_RULES: dict[type, OpRule] = {
    nn.Conv1d: OpRule("conv", weight_axis=0, functional=F.conv1d),
    nn.Conv2d: OpRule("conv", weight_axis=0, functional=F.conv2d),
    nn.Conv3d: OpRule("conv", weight_axis=0, functional=F.conv3d),
    nn.ConvTranspose1d: OpRule("conv_transpose", weight_axis=DECONV_AXIS, functional=F.conv_transpose1d),
    nn.ConvTranspose2d: OpRule("conv_transpose", weight_axis=DECONV_AXIS, functional=F.conv_transpose2d),
    nn.Linear: OpRule("linear", weight_axis=0, functional=F.linear),
    nn.AvgPool1d: OpRule("avgpool"),
    nn.AvgPool2d: OpRule("avgpool"),
    nn.AvgPool3d: OpRule("avgpool"),
    nn.AdaptiveAvgPool1d: OpRule("avgpool"),
    nn.AdaptiveAvgPool2d: OpRule("avgpool"),
    nn.AdaptiveAvgPool3d: OpRule("avgpool"),
    nn.MaxPool1d: OpRule("maxpool", transparent=True),
    nn.MaxPool2d: OpRule("maxpool", transparent=True),
    nn.MaxPool3d: OpRule("maxpool", transparent=True),
}

_MATMUL = OpRule("matmul", act_args=(0, 1))
_ADD = OpRule("add", act_args=(0, 1))
_CAT = OpRule("cat", transparent=True)

FUNCTION_RULES: dict[object, OpRule] = {
    F.conv1d: OpRule("conv"),
    F.conv2d: OpRule("conv"),
    F.conv3d: OpRule("conv"),
    F.conv_transpose1d: OpRule("conv_transpose"),
    F.conv_transpose2d: OpRule("conv_transpose"),
    F.linear: OpRule("linear"),
    torch.matmul: _MATMUL,
    operator.matmul: _MATMUL,
    torch.bmm: _MATMUL,
    F.avg_pool1d: OpRule("avgpool"),
    F.avg_pool2d: OpRule("avgpool"),
    F.avg_pool3d: OpRule("avgpool"),
    F.adaptive_avg_pool1d: OpRule("avgpool"),
    F.adaptive_avg_pool2d: OpRule("avgpool"),
    F.adaptive_avg_pool3d: OpRule("avgpool"),
    F.max_pool1d: OpRule("maxpool", transparent=True),
    F.max_pool2d: OpRule("maxpool", transparent=True),
    F.max_pool3d: OpRule("maxpool", transparent=True),
    operator.add: _ADD,
    operator.iadd: _ADD,
    torch.add: _ADD,
    torch.cat: _CAT,
    torch.concat: _CAT,
}

# The integer-arithmetic forms the reference graph calls (quantize/int8_ops.py) behave like their functional op.
FUNCTION_RULES.update(
    {
        integer: FUNCTION_RULES[functional]
        for integer, functional in int8_ops.FUNCTIONAL_OF.items()
        if functional in FUNCTION_RULES
    }
)
_aten = torch.ops.aten
#: The same rules for the aten ops of ``torch.export`` graphs (PT2E; ``fx2trt_pipeline.pt2e``).
FUNCTION_RULES.update(
    {
        _aten.conv1d.default: OpRule("conv", weight_axis=0, weight_arg=1),
        _aten.conv2d.default: OpRule("conv", weight_axis=0, weight_arg=1),
        _aten.conv3d.default: OpRule("conv", weight_axis=0, weight_arg=1),
        _aten.conv_transpose1d.default: OpRule("conv_transpose", weight_axis=DECONV_AXIS, weight_arg=1),
        _aten.conv_transpose2d.input: OpRule("conv_transpose", weight_axis=DECONV_AXIS, weight_arg=1),
        _aten.linear.default: OpRule("linear", weight_axis=0, weight_arg=1),
        _aten.matmul.default: _MATMUL,
        _aten.bmm.default: _MATMUL,
        _aten.mm.default: _MATMUL,
        _aten.avg_pool2d.default: OpRule("avgpool"),
        _aten.adaptive_avg_pool2d.default: OpRule("avgpool"),
        _aten.max_pool2d.default: OpRule("maxpool", transparent=True),
        _aten.add.Tensor: _ADD,
        _aten.add_.Tensor: _ADD,
        _aten.cat.default: _CAT,
    }
)

METHOD_RULES: dict[str, OpRule] = {"add": _ADD, "add_": _ADD, "matmul": _MATMUL}

#: A nearest-neighbour resize copies values: Q/DQ commute with it as with max-pool, so it shares its input's
#: scale (FPN upsampling, onnx2torch Resize). Linear resizes average values and are not transparent.
NEAREST_RESIZE = OpRule("resize", transparent=True)


def _nearest_resize(node: torch.fx.Node) -> OpRule | None:
    mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
    return NEAREST_RESIZE if mode == "nearest" else None


#: Layers whose output can fuse into a following add (TensorRT's conv + residual add fusion).
FUSABLE_KINDS = ("conv", "conv_transpose", "linear")


def overrides_forward(module: nn.Module, base: type[nn.Module]) -> bool:
    """Whether ``module`` (an instance of ``base``) runs a forward of its own instead of ``base``'s."""
    return getattr(type(module), "forward", None) is not getattr(base, "forward", None)


def rule_for_module(module: nn.Module) -> OpRule | None:
    """The rule for a module instance (exact type match first, then subclasses that keep the base's forward).

    A subclass with its own forward (kept whole as a leaf) computes something else than its base: lowering it to
    the base's functional op would drop that forward, so it has no rule and stays in float.
    """
    rule = MODULE_RULES.get(type(module))
    if rule is not None:
        return rule
    if isinstance(module, nn.Upsample):
        return NEAREST_RESIZE if module.mode == "nearest" else None
    for cls, candidate in MODULE_RULES.items():
        if isinstance(module, cls):
            return None if overrides_forward(module, cls) else candidate
    return None


def rule_for_node(node: torch.fx.Node, modules: dict[str, nn.Module]) -> OpRule | None:
    """The rule for an FX node, or ``None`` when the op takes no part in quantization."""
    if node.op == "call_module":
        return rule_for_module(modules[node.target])
    if node.op == "call_function":
        return _nearest_resize(node) if node.target is F.interpolate else FUNCTION_RULES.get(node.target)
    if node.op == "call_method":
        return METHOD_RULES.get(node.target)
    return None
