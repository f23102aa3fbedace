"""Hand-made reference-quantized graphs for converter tests (a stand-in for the quantizer).

Produces the node shapes of docs/architecture.md: activation Q/DQ pairs on chosen inputs, and
conv / deconv / linear weights as int8 get_attr constants dequantized per channel into functional calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node
from torch.fx.passes.shape_prop import ShapeProp

from fx2trt_pipeline.quantize.qdq_ops import DEQUANTIZE, QUANTIZE, is_any_dequantize, is_any_quantize

WEIGHTED_MODULES = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
WEIGHTED_FUNCTIONS = (F.conv1d, F.conv2d, F.conv_transpose1d, F.conv_transpose2d, F.linear)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, F.conv_transpose1d, F.conv_transpose2d)


def quantize_weight(w: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric narrow-range per-channel int8 weights and their scales."""
    dims = [d for d in range(w.dim()) if d != axis]
    scale = w.detach().abs().amax(dim=dims).clamp_min(1e-8) / 127
    shape = [1] * w.dim()
    shape[axis] = -1
    q = torch.clamp(torch.round(w.detach() / scale.reshape(shape)), -127, 127).to(torch.int8)
    return q, scale.to(torch.float32)


def _attr(gm: GraphModule, name: str, value: torch.Tensor) -> str:
    gm.register_buffer(name, value)
    return name


def _insert_qdq_after(gm: GraphModule, node: Node, scale: float, users: Iterable[Node] | None = None) -> Node:
    """``quantize -> dequantize`` pair after ``node``, used by ``users`` (all users when None)."""
    targets = list(users) if users is not None else [u for u in node.users]
    scale_name = _attr(gm, f"{node.name}_input_scale", torch.tensor(scale, dtype=torch.float32))
    with gm.graph.inserting_after(node):
        s = gm.graph.get_attr(scale_name)
    with gm.graph.inserting_after(s):
        q = gm.graph.call_function(QUANTIZE, (node, s, None), name=f"{node.name}_q")
    with gm.graph.inserting_after(q):
        dq = gm.graph.call_function(DEQUANTIZE, (q, s, None), name=f"{node.name}_dq")
    for user in targets:
        user.replace_input_with(node, dq)
    return dq


def amax_of(gm: GraphModule, example: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """|x| max of every tensor-valued node on ``example`` (for activation scales)."""
    ShapeProp(gm).propagate(*example)
    values: dict[str, float] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Node) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                values[n.name] = float(out.detach().abs().max()) if out.numel() else 0.0
            return out

    Recorder(gm).run(*example)
    return values


def quantize_inputs(gm: GraphModule, example: tuple[torch.Tensor, ...]) -> GraphModule:
    """Q/DQ right after every float placeholder (scale = amax / 127)."""
    amax = amax_of(gm, example)
    for node in [n for n in gm.graph.nodes if n.op == "placeholder"]:
        if node.name in amax and node.users:
            _insert_qdq_after(gm, node, max(amax[node.name], 1e-6) / 127)
    gm.recompile()
    return gm


def quantize_weighted_inputs(gm: GraphModule, example: tuple[torch.Tensor, ...]) -> GraphModule:
    """Q/DQ on the activation input of every conv / deconv / linear (one pair per producer)."""
    amax = amax_of(gm, example)
    producers: dict[Node, list[Node]] = {}
    for node in gm.graph.nodes:
        weighted = (node.op == "call_module" and isinstance(gm.get_submodule(node.target), WEIGHTED_MODULES)) or (
            node.op == "call_function" and node.target in WEIGHTED_FUNCTIONS
        )
        if weighted and isinstance(node.args[0], Node):
            producers.setdefault(node.args[0], []).append(node)
    for producer, users in producers.items():
        _insert_qdq_after(gm, producer, max(amax.get(producer.name, 1.0), 1e-6) / 127, users)
    gm.recompile()
    return gm


def lower_weights(gm: GraphModule, deconv_axis: int = 0) -> GraphModule:
    """conv / deconv / linear modules and functionals -> functional calls on dequantized int8 weights."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and type(gm.get_submodule(node.target)) in WEIGHTED_MODULES:
            _lower_module(gm, node, deconv_axis)
        elif (
            node.op == "call_function"
            and node.target in WEIGHTED_FUNCTIONS
            and isinstance(node.args[1], Node)
            and node.args[1].op == "get_attr"
        ):
            _lower_functional_weight(gm, node, deconv_axis)
    gm.graph.lint()
    gm.recompile()
    return gm


def _weight_dq(gm: GraphModule, before: Node, prefix: str, weight: torch.Tensor, axis: int) -> Node:
    q, scale = quantize_weight(weight, axis)
    q_name = _attr(gm, f"{prefix}_weight_int8", q)
    s_name = _attr(gm, f"{prefix}_weight_scale", scale)
    with gm.graph.inserting_before(before):
        wq = gm.graph.get_attr(q_name)
        ws = gm.graph.get_attr(s_name)
        return gm.graph.call_function(DEQUANTIZE, (wq, ws, axis), name=f"{prefix}_weight_dq")


def _lower_module(gm: GraphModule, node: Node, deconv_axis: int) -> None:
    module = gm.get_submodule(node.target)
    prefix = node.name
    transposed = isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d))
    dq = _weight_dq(gm, node, prefix, module.weight, deconv_axis if transposed else 0)
    bias: Any = None
    if module.bias is not None:
        b_name = _attr(gm, f"{prefix}_bias", module.bias.detach().clone())
        with gm.graph.inserting_before(node):
            bias = gm.graph.get_attr(b_name)
    x = node.args[0]
    if isinstance(module, nn.Linear):
        target, args = F.linear, (x, dq, bias)
    elif transposed:
        target = F.conv_transpose1d if isinstance(module, nn.ConvTranspose1d) else F.conv_transpose2d
        args = (
            x,
            dq,
            bias,
            module.stride,
            module.padding,
            module.output_padding,
            module.groups,
            module.dilation,
        )
    else:
        target = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
        args = (x, dq, bias, module.stride, module.padding, module.dilation, module.groups)
    name = node.name
    with gm.graph.inserting_before(node):
        new = gm.graph.call_function(target, args)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    new.name = name  # the functional node keeps the module's node name (graph contract)


def _lower_functional_weight(gm: GraphModule, node: Node, deconv_axis: int) -> None:
    weight_node = node.args[1]
    weight = gm.get_buffer(weight_node.target)
    axis = deconv_axis if node.target in _TRANSPOSED else 0
    dq = _weight_dq(gm, node, node.name, weight, axis)
    node.replace_input_with(weight_node, dq)
    if not weight_node.users:
        gm.graph.erase_node(weight_node)


def qdq_node_counts(gm: GraphModule) -> tuple[int, int]:
    """(quantize, dequantize) layer counts a graph's Q/DQ nodes should give, torch.ao and PT2E flavours
    included: a PT2E quantize of a constant weight folds into the int8 constant, and PT2E's per-consumer
    copies of one dequantize (convert_pt2e duplicates them) become one layer."""

    def packet(n: Node, op: Any) -> bool:  # torch.ops.fx2trt.quantize without an overload
        return n.op == "call_function" and n.target is op

    q = sum(
        1
        for n in gm.graph.nodes
        if (is_any_quantize(n) or packet(n, torch.ops.fx2trt.quantize)) and getattr(n.args[0], "op", None) != "get_attr"
    )
    dq_keys = set()
    for n in gm.graph.nodes:
        if is_any_dequantize(n) or packet(n, torch.ops.fx2trt.dequantize):
            pt2e = "quantized_decomposed" in str(n.target)
            dq_keys.add((n.target, n.args, tuple(n.kwargs.items())) if pt2e else n)
    return q, len(dq_keys)


class Fn(nn.Module):
    """A module whose forward is ``fn(self, *inputs)``; keyword tensors become buffers (get_attr nodes)."""

    def __init__(self, fn: Callable[..., Any], **buffers: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for name, value in buffers.items():
            self.register_buffer(name, value)

    def forward(self, *inputs: Any) -> Any:
        return self.fn(self, *inputs)


def ao_reference(model: nn.Module, example: tuple[torch.Tensor, ...], per_channel: bool = True) -> GraphModule:
    """torch.ao reference graph (prepare_fx + convert_to_reference_fx, TensorRT backend config),
    symmetric qint8; ConvTranspose weights per tensor (torch.ao's per-channel observer asserts on them)."""
    import warnings

    from torch.ao import quantization as tq
    from torch.ao.quantization.backend_config import get_tensorrt_backend_config
    from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_fx

    act = tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    w_tensor = tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    w_channel = tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    mapping = tq.QConfigMapping().set_global(tq.QConfig(activation=act, weight=w_channel if per_channel else w_tensor))
    for cls in (nn.ConvTranspose1d, nn.ConvTranspose2d):
        mapping = mapping.set_object_type(cls, tq.QConfig(activation=act, weight=w_tensor))
    backend = get_tensorrt_backend_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model.eval(), mapping, example, backend_config=backend)
        prepared(*example)
        return convert_to_reference_fx(prepared, qconfig_mapping=mapping, backend_config=backend)


def ftp_quantized(shape: tuple[int, ...], **config: Any) -> dict:
    """OpCase fields for a module quantized by ``ftp.quantize_model`` (integer-arithmetic conv / linear nodes)."""
    import fx2trt_pipeline as ftp

    example = (torch.randn(shape, generator=torch.Generator().manual_seed(0)),)
    cfg = ftp.QuantConfig(show_progress=False, **config)
    return dict(inputs=lambda: example, trace=lambda m: ftp.quantize_model(m, [example], config=cfg), atol=1e-3)
