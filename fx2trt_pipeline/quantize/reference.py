"""Turn a BN-folded graph plus scales into the reference-quantized GraphModule.

The result simulates the INT8 network as TensorRT defines it: activation Q/DQ pairs with per-tensor
scales, weights stored as int8 constants with per-channel scales and dequantized into conv / deconv /
linear calls. A weighted layer whose input is quantized calls the integer-arithmetic form of its
functional op (:mod:`fx2trt_pipeline.quantize.int8_ops`: exact int8 x int8 sums, one float32
epilogue), so its outputs do not depend on threads, batch or device. See docs/architecture.md.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.quantize.reference import quantize_weight
    >>> q, s = quantize_weight(torch.tensor([[1.0, -2.0], [0.5, 0.25]]), axis=0)
    >>> q.tolist(), [round(v, 5) for v in s.tolist()]
    ([[64, -127], [127, 64]], [0.01575, 0.00394])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize import int8_ops
from fx2trt_pipeline.quantize.op_rules import rule_for_module, rule_for_node
from fx2trt_pipeline.quantize.placement import Placement, set_use
from fx2trt_pipeline.quantize.qdq_ops import DEQUANTIZE, QMAX, QUANTIZE, WEIGHT_QMAX

#: Smallest amax we turn into a scale; avoids division by zero for all-zero tensors or channels.
MIN_AMAX = 2.0**-30


def activation_scale(amax: float) -> torch.Tensor:
    """Per-tensor symmetric scale for ``amax`` over [-128, 127] (0-d float32)."""
    return torch.tensor(max(float(amax), MIN_AMAX) / QMAX, dtype=torch.float32)


def quantize_weight(w: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric narrow-range int8 weight quantization; per channel on ``axis`` or per tensor."""
    w = w.detach().to(torch.float32)
    if axis is None:
        amax = w.abs().amax()
    else:
        dims = [d for d in range(w.dim()) if d != axis]
        amax = w.abs().amax(dim=dims) if dims else w.abs()
    scale = amax.clamp_min(MIN_AMAX) / WEIGHT_QMAX
    shape = [1] * w.dim()
    if axis is not None:
        shape[axis] = -1
    q = torch.clamp(torch.round(w / scale.reshape(shape)), -WEIGHT_QMAX, WEIGHT_QMAX).to(torch.int8)
    return q, scale


def build_reference(gm: GraphModule, placement: Placement, amax: dict[str, float]) -> dict[str, list[float]]:
    """Insert activation Q/DQ and lower quantized weighted modules, in place.

    Args:
        gm: the captured, BN-folded GraphModule (no observers).
        placement: where the Q/DQ pairs and quantized weights go.
        amax: calibrated |x| threshold per scale group.

    Returns:
        The weight scales per layer (for the saved quantization state).
    """
    _insert_activation_qdq(gm, placement, amax)
    weight_scales = {}
    nodes = {n.name: n for n in gm.graph.nodes}
    modules = dict(gm.named_modules())
    for wp in placement.weights.values():
        weight_scales[wp.layer] = _lower_weighted(gm, nodes[wp.layer], wp.axis, modules)
    for node in list(gm.graph.nodes):
        _use_integer_matmul(node, modules)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return weight_scales


def _insert_activation_qdq(gm: GraphModule, placement: Placement, amax: dict[str, float]) -> None:
    graph = gm.graph
    nodes = {n.name: n for n in graph.nodes}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for point in placement.points.values():
        tensor = nodes[point.tensor]
        scale_attr = f"{point.group}_act_scale"
        if not hasattr(gm, scale_attr):
            gm.register_buffer(scale_attr, activation_scale(amax[point.group]))
        # get_attr nodes may not sit between placeholders, so graph inputs get their Q/DQ after the last one.
        anchor = placeholders[-1] if tensor.op == "placeholder" else tensor
        with graph.inserting_after(anchor):
            scale = graph.create_node("get_attr", scale_attr, name=f"{point.tensor}_scale")
        with graph.inserting_after(scale):
            q = graph.create_node("call_function", QUANTIZE, (tensor, scale, None), name=f"{point.tensor}_q")
        with graph.inserting_after(q):
            dq = graph.create_node("call_function", DEQUANTIZE, (q, scale, None), name=f"{point.tensor}_dq")
        for node in (q, dq):
            node.meta["fx2trt"] = {
                "role": "activation",
                "group": point.group,
                "layers": [consumer for consumer, _ in point.uses],
            }
        for consumer, path in point.uses:
            set_use(nodes[consumer], path, dq)


def _lower_weighted(gm: GraphModule, node: Node, axis: int | None, modules: dict[str, nn.Module]) -> list[float]:
    """Replace ``call_module`` conv/deconv/linear by its functional form with an int8 weight."""
    module = gm.get_submodule(str(node.target))
    rule = rule_for_module(module)
    if rule is None or rule.functional is None:
        raise ConfigError(f"Layer '{node.name}' ({type(module).__name__}) has no quantized functional form")
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise ConfigError(
            f"Layer '{node.name}' uses padding_mode={module.padding_mode!r}, which TensorRT's "
            "convolution does not have; keep it in float with QuantConfig(skip=['"
            f"{node.target}'])"
        )
    q, scale = quantize_weight(module.weight, axis)
    prefix = node.name
    gm.register_buffer(f"{prefix}_weight_int8", q)
    gm.register_buffer(f"{prefix}_weight_scale", scale)
    graph = gm.graph
    with graph.inserting_before(node):
        wq = graph.create_node("get_attr", f"{prefix}_weight_int8", name=f"{prefix}_weight_int8")
        ws = graph.create_node("get_attr", f"{prefix}_weight_scale", name=f"{prefix}_weight_scale")
        wdq = graph.create_node("call_function", DEQUANTIZE, (wq, ws, axis), name=f"{prefix}_weight_dq")
        wdq.meta["fx2trt"] = {"role": "weight", "layers": [prefix]}
        bias = None
        if module.bias is not None:
            gm.register_buffer(f"{prefix}_bias", module.bias.detach().to(torch.float32).clone())
            bias = graph.create_node("get_attr", f"{prefix}_bias", name=f"{prefix}_bias")
        x = node.args[0]
        if isinstance(module, nn.Linear):
            args = (x, wdq, bias)
        elif isinstance(module, nn.modules.conv._ConvTransposeNd):
            args = (x, wdq, bias, module.stride, module.padding, module.output_padding, module.groups, module.dilation)
        else:
            args = (x, wdq, bias, module.stride, module.padding, module.dilation, module.groups)
    # Rewrite the node in place so that it keeps its name, meta and users.
    node.op, node.target, node.args, node.kwargs = "call_function", rule.functional, args, {}
    _use_integer_arithmetic(node, ws, axis, modules)
    return [float(v) for v in scale.reshape(-1).tolist()]


def _is_activation_dequantize(x: object) -> bool:
    """A per-tensor (activation) DQ node: the per-channel axis argument is ``None``."""
    return isinstance(x, Node) and x.target is DEQUANTIZE and x.args[2] is None


def _activation_dequantize(x: object, modules: dict[str, nn.Module]) -> Node | None:
    """The per-tensor activation DQ whose values ``x`` holds: ``x`` itself, or the DQ behind max-pools.

    A max-pool of dequantized values is the dequantized max-pool of their int8 values (the scale is
    positive), which is how TensorRT runs DQ -> MaxPool -> Conv: an INT8 convolution.
    """
    while isinstance(x, Node):
        if x.target is DEQUANTIZE:
            return x if _is_activation_dequantize(x) else None
        rule = rule_for_node(x, modules)
        if rule is None or rule.kind != "maxpool":
            return None
        x = x.args[0]
    return None


def _use_integer_arithmetic(node: Node, weight_scale: Node, axis: int | None, modules: dict[str, nn.Module]) -> None:
    """Point a lowered layer at its integer-arithmetic form when TensorRT would sum it in int32:
    its input is a per-tensor activation DQ (maybe through max-pools) and its weight scale is per
    output channel."""
    dq = _activation_dequantize(node.args[0], modules)
    if dq is None:
        return
    if axis != int8_ops.OUTPUT_CHANNEL_AXIS.get(node.target, 0):
        return  # a scale on the summed axis (deconv axis 0) cannot leave the integer sum
    if any(isinstance(a, str) for a in node.args):
        return  # padding="same"/"valid": the op's schema takes int lists
    node.target = int8_ops.INTEGER_OF[node.target]
    node.kwargs = {"input_scale": dq.args[1], "weight_scale": weight_scale}


def _use_integer_matmul(node: Node, modules: dict[str, nn.Module]) -> None:
    """A matmul of two per-tensor quantized activations (attention) sums int8 x int8 exactly in TensorRT:
    point it at the integer-arithmetic matmul."""
    rule = rule_for_node(node, modules)
    if rule is None or rule.kind != "matmul" or len(node.args) != 2 or node.kwargs:
        return
    a, b = node.args
    if not (_is_activation_dequantize(a) and _is_activation_dequantize(b)):
        return  # only DQ outputs feed an INT8 matmul directly
    node.op, node.target = "call_function", int8_ops.matmul
    node.kwargs = {"input_scale": a.args[1], "weight_scale": b.args[1]}
