"""float16 float parts: rewrite a reference-quantized GraphModule so that everything that is not int8 is float16.

``QuantConfig(float_dtype="float16")`` runs this pass last in :func:`fx2trt_pipeline.convert` (and in
``rebuild_quantized``). The converters then give the strongly typed network the same dtypes, because
they take every dtype from the graph's tensors::

    x (float32 input) -> float_cast(x, float16) -> Q -> DQ(out_dtype=float16) -> int8 conv (float16 out)
      -> float16 layers (weights, biases and constants float16) -> float_cast(y, float32) -> output

Where float16 rounding happens (the same rules the network executor derives from the network's dtypes):

* Q/DQ scales stay float32 (TensorRT accepts float32 scales on float16 data). A quantize reads its
  float16 input exactly, computes ``x / s`` in float32 and rounds half to even; a dequantize computes
  ``q * s`` in float32 and rounds once to float16.
* An INT8 conv / deconv / linear / matmul sums exactly in integers; its epilogue
  ``float32(acc) * (s_in * s_w) + bias`` runs in float32 (the float16 bias is exact in float32) and is
  rounded once to float16, its output tensor's dtype.
* Every other layer computes in float32 from its float16 inputs and rounds its output once to float16
  (elementwise ops, activations, pooling: exactly so in torch and in the executor). Layers with a
  summation (float convolutions, matmuls, reductions) accumulate in float32 in an order the kernel
  chooses, so they are exact only up to that order, as in float32 builds.
* Python float literals of elementwise ops are rounded to float16 here, because TensorRT holds them as
  float16 constants (torch would multiply by the unrounded value).

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> cfg = ftp.QuantConfig(float_dtype="float16", show_progress=False)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=cfg)
    >>> qgm(x).dtype, [n.args[3] for n in qgm.graph.nodes if n.name.endswith("_dq")][:1]
    (torch.float32, [torch.float16])
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_aggregate

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize import int8_ops
from fx2trt_pipeline.quantize.qdq_ops import DEQUANTIZE, QMIN, QUANTIZE

#: Largest finite float16 value.
FLOAT16_MAX = 65504.0
#: Below this scale a dequantized float16 value (subnormal spacing 2**-24) no longer determines its integer.
MIN_FLOAT16_SCALE = 2.0**-23

#: Targets whose Python float operands TensorRT holds as constants of the tensor's dtype.
_ELEMENTWISE = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.clamp,
    torch.clip,
    "add",
    "sub",
    "mul",
    "div",
    "add_",
    "sub_",
    "mul_",
    "div_",
    "clamp",
    "clip",
}


@torch.fx.wrap
def float_cast(x: Any, dtype: torch.dtype) -> Any:
    """``x.to(dtype)`` when ``x`` is a floating-point tensor, else ``x`` unchanged (the network boundary
    casts of a float16 graph: float32 inputs to float16, float16 outputs back to float32).

    Example:
        >>> float_cast(torch.tensor([1.0, 2.0]), torch.float16).dtype, float_cast(3, torch.float16)
        (torch.float16, 3)
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x


def use_float16(gm: GraphModule) -> GraphModule:
    """Make every float tensor of the reference-quantized ``gm`` float16, in place (see module docstring).

    Raises:
        ConfigError: a scale outside float16's range (an activation whose ``128 * scale`` overflows, or
            a scale so small that its dequantized float16 values lose their integers), naming the tensor
            or layer.
    """
    graph = gm.graph
    scales = _scale_targets(gm)
    _check_scales(gm, scales)
    for node in list(graph.nodes):
        if node.op == "get_attr" and node.target not in scales:
            _buffer_to_half(gm, str(node.target))
        elif node.op == "call_module":
            gm.get_submodule(str(node.target)).half()
        elif node.op == "call_function" and node.target is DEQUANTIZE:
            node.args = (*node.args[:3], *(None,) * (3 - len(node.args[:3])), torch.float16)
            node.kwargs = {k: v for k, v in node.kwargs.items() if k != "out_dtype"}
        if (node.target in _ELEMENTWISE) and node.op in ("call_function", "call_method"):
            node.args = map_aggregate(node.args, _half_literal)
            node.kwargs = map_aggregate(node.kwargs, _half_literal)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for p in placeholders:
        users = list(p.users)
        with graph.inserting_after(placeholders[-1]):
            cast = graph.call_function(float_cast, (p, torch.float16))
        cast.name = f"{p.name}_float16"
        for u in users:
            u.replace_input_with(p, cast)
    out = next(n for n in graph.nodes if n.op == "output")

    def cast_back(value: Any) -> Any:
        if not isinstance(value, Node):
            return value
        with graph.inserting_before(out):
            node = graph.call_function(float_cast, (value, torch.float32))
        node.name = f"{value.name}_float32"
        return node

    out.args = (map_aggregate(out.args[0], cast_back),)
    graph.lint()
    gm.recompile()
    return gm


def _half_literal(value: Any) -> Any:
    return float(torch.tensor(value, dtype=torch.float16)) if type(value) is float else value


def _scale_targets(gm: GraphModule) -> set[str]:
    """get_attr targets that are Q/DQ or integer-op scales: these stay float32."""
    out = set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        scales: list[Any] = []
        if node.target in (QUANTIZE, DEQUANTIZE):
            scales.append(node.args[1])
        if int8_ops.is_integer_op(node):
            scales += [node.kwargs.get("input_scale"), node.kwargs.get("weight_scale")]
        out |= {str(s.target) for s in scales if isinstance(s, Node) and s.op == "get_attr"}
    return out


def _attr(gm: GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _buffer_to_half(gm: GraphModule, target: str) -> None:
    value = _attr(gm, target)
    if not isinstance(value, torch.Tensor) or value.dtype not in (torch.float32, torch.float64):
        return
    owner_path, _, name = target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    half = value.detach().to(torch.float16)
    if isinstance(value, torch.nn.Parameter):
        setattr(owner, name, torch.nn.Parameter(half, requires_grad=False))
    elif name in owner._buffers:
        owner._buffers[name] = half
    else:
        setattr(owner, name, half)


def _check_scales(gm: GraphModule, scales: set[str]) -> None:
    """Every dequantized value must fit float16 and still determine its integer (``round(v / s) == q``)."""
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is not DEQUANTIZE or node.args[1].op != "get_attr":
            continue
        s = _attr(gm, str(node.args[1].target)).to(torch.float32)
        source = node.args[0]
        weight = source.op == "get_attr"
        if weight:
            q = _attr(gm, str(source.target))
            axis = node.args[2]
            shape = [1] * q.dim()
            if axis is not None:
                shape[axis] = -1
            back = torch.round(q.float().mul(s.reshape(shape)).half().float() / s.reshape(shape))
            bad = bool((back != q.float()).any())
        else:
            bad = bool((s * -QMIN > FLOAT16_MAX).any() or (s < MIN_FLOAT16_SCALE).any())
        if bad:
            what = "weight of layer" if weight else "activation"
            name = node.meta.get("fx2trt", {}).get("layers", [node.name])[0] if weight else node.name
            raise ConfigError(
                f"float_dtype='float16': the {what} '{name}' has a scale ({float(s.min()):.3g}..{float(s.max()):.3g}) "
                f"whose dequantized values do not fit float16 (range {FLOAT16_MAX}, integers lost below scale "
                f"{MIN_FLOAT16_SCALE:.3g}); keep it in float32 with QuantConfig(float_dtype='float32') or skip the "
                "layer (QuantConfig.skip)."
            )
