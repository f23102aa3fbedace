"""Placement lint: Q/DQ placements TensorRT documents as costly, found on the network before the build.

::

    INetworkDefinition (ours, torch.ao's or PT2E's graph: all lower to IQuantize / IDequantize layers)
      -> NetworkView      indexed once: producer and consumers of each tensor, layer kinds, Q/DQ scales
      -> LINT_RULES, in order, each (NetworkView) -> [LintFinding]
           half_quantized_weighted_op       conv / deconv / matmul with only one of data, weight dequantized
           concat_scales_differ             concat inputs (and its output Q) with different scales
           q_between_conv_and_activation    conv -> Q -> DQ -> activation: quantized before the activation
           qdq_on_network_output            a network output made by a Q or DQ layer
           qdq_around_float_only_op         DQ into LayerNorm / softmax / GELU / 3-D deconv (no INT8 kernel)
           residual_identity_not_quantized  conv + float skip input: quantize the skip input
           small_int8_island                a lone INT8 conv / matmul between float layers
           int8_channels_not_multiple_of_16 (advice) INT8 conv channels that tensor-core kernels pad
      -> "LINT <rule> <node>: <message>; <remedy>", one line each, naming the FX node of the layer

A new rule is one function ``(NetworkView) -> list[LintFinding]`` appended to :data:`LINT_RULES`
(:func:`lint_rule` makes one from a generator of ``(layer, message, remedy)``, the rule id being its name).
Layer attributes are read with a temporary cast to the concrete class, ``layer.type`` first (after the cast,
``type`` on IActivationLayer / IPoolingLayer means the activation / pooling kind), and the class is restored so
that wrappers the caller holds keep behaving as ``ILayer``.

Example:
    >>> import numpy as np
    >>> from fx2trt_pipeline import trt_api
    >>> from fx2trt_pipeline.engine.engine_builder import create_builder
    >>> trt = trt_api.get_trt()
    >>> network = create_builder().create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    >>> x = network.add_input("x", trt.float32, (1, 4))
    >>> scale_value = np.array(0.05, dtype=np.float32)  # trt.Weights does not copy: keep it alive
    >>> scale = network.add_constant((), trt.Weights(scale_value)).get_output(0)
    >>> q = network.add_quantize(x, scale, trt.int8)
    >>> q.name = "x_q"
    >>> dq = network.add_dequantize(q.get_output(0), scale, trt.float32)
    >>> dq.name = "x_dq"
    >>> network.mark_output(dq.get_output(0))
    >>> for finding in lint_network(network):
    ...     print(finding)
    LINT qdq_on_network_output x_dq: network output ... is made by DEQUANTIZE layer 'x_dq'...; drop the Q/DQ pair ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fx2trt_pipeline.plan.network_view import CHAIN_DEPTH, COMPUTE, DATA_MOVES, LayerInfo, NetworkView

GELU = ("GELU_ERF", "GELU_TANH")


@dataclass(frozen=True)
class LintFinding:
    """One placement problem: the rule, the FX node and network layer, what is wrong and what to do."""

    rule: str
    node: str
    layer: str
    message: str
    remedy: str

    def __str__(self) -> str:
        return f"LINT {self.rule} {self.node}: {self.message}; {self.remedy}"


def _same_scale(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=0.0))


def _scale_text(value: np.ndarray | None) -> str:
    if value is None:
        return "computed"
    return f"{value[0]:.4g}" if value.size == 1 else f"per-channel[{value.size}]"


#: What a rule function yields: the layer at fault, what is wrong, what to do.
Problem = tuple[LayerInfo, str, str]


def lint_rule(fn: Callable[[NetworkView], Iterable[Problem]]) -> Callable[[NetworkView], list[LintFinding]]:
    """A rule from a generator of problems; the rule id is the function's name."""

    @functools.wraps(fn)
    def rule(view: NetworkView) -> list[LintFinding]:
        return [LintFinding(fn.__name__, layer.node, layer.name, what, remedy) for layer, what, remedy in fn(view)]

    return rule


# ---- rules ------------------------------------------------------------------------------------------------------


@lint_rule
def half_quantized_weighted_op(view: NetworkView) -> Iterator[Problem]:
    """Conv / deconv / matmul with a dequantized data input and a float weight, or the reverse (TensorRT#3197)."""
    for layer in (la for la in view.layers if la.kind in COMPUTE):
        data, weight = view.quantized_inputs(layer)
        if data != weight:
            what = "the data input is dequantized but the weight is float" if data else "the weight is int8 + DQ "
            what += "" if data else "but the data input has no Q/DQ"
            missing = "weight (int8 constant -> DQ)" if data else "data input (Q/DQ pair)"
            yield (
                layer,
                f"{layer.kind} {layer.name!r}: {what}, so TensorRT runs it in float (TensorRT#3197)",
                f"quantize its {missing} too, or remove the other Q/DQ to keep it float on purpose",
            )


@lint_rule
def concat_scales_differ(view: NetworkView) -> Iterator[Problem]:
    """Concat whose dequantized inputs (or output Q) have different scales: TensorRT requantizes (TensorRT#4366)."""
    for layer in (la for la in view.layers if la.kind == "CONCATENATION"):
        dqs = [d for t in layer.inputs for d in (view.source_dqs(t) or ())]
        named = [(d.node, view.scale(d)) for d in dqs]
        named += [(c.node, view.scale(c)) for c in view.consumers_of(layer) if c.kind == "QUANTIZE"]
        known = [s for _, s in named if s is not None]
        if dqs and len(known) > 1 and not all(_same_scale(known[0], s) for s in known[1:]):
            scales = ", ".join(f"{node} {_scale_text(s)}" for node, s in named)
            yield (
                layer,
                f"concat {layer.name!r} joins tensors quantized with different scales ({scales}), so TensorRT "
                "requantizes its inputs instead of concatenating int8 as is: extra rounding (TensorRT#4366)",
                "give all concat inputs and its output one shared scale (e.g. the largest amax)",
            )


@lint_rule
def q_between_conv_and_activation(view: NetworkView) -> Iterator[Problem]:
    """conv / matmul -> Q -> DQ -> activation: quantizing before the activation (TensorRT#993)."""
    for layer in (la for la in view.layers if la.kind in COMPUTE):
        for q in (c for c in view.consumers_of(view.after_bias(layer)) if c.kind == "QUANTIZE"):
            dqs = [d for d in view.consumers_of(q) if d.kind == "DEQUANTIZE"]
            acts = [a for d in dqs for a in view.consumers_of(d) if a.kind == "ACTIVATION"]
            if acts:
                yield (
                    q,
                    f"Q/DQ between {layer.kind} {layer.node!r} and activation {acts[0].node!r} ({acts[0].op}) rounds "
                    "the conv output before the activation inside the fused epilogue, or splits the conv+activation "
                    "fusion where TensorRT does not fold it (TensorRT#993)",
                    f"remove this Q/DQ and quantize after the activation {acts[0].node!r} instead",
                )


@lint_rule
def qdq_on_network_output(view: NetworkView) -> Iterator[Problem]:
    """A network output made by a Q or DQ layer (TensorRT#2604)."""
    for name in view.network_outputs:
        layer = view.producer.get(name)
        if layer is not None and layer.kind in ("QUANTIZE", "DEQUANTIZE"):
            yield (
                layer,
                f"network output {name!r} is made by {layer.kind} layer {layer.name!r}: the output is rounded to "
                "int8 precision for no INT8 kernel's benefit (TensorRT#2604)",
                "drop the Q/DQ pair on the graph output; the last layer's float output needs none",
            )


def _float_only(layer: LayerInfo) -> str | None:
    if layer.kind in ("NORMALIZATION", "SOFTMAX"):
        return layer.kind
    if layer.kind == "ACTIVATION" and layer.op in GELU:
        return layer.op
    return "3-D DECONVOLUTION" if layer.kind == "DECONVOLUTION" and layer.spatial == 3 else None


@lint_rule
def qdq_around_float_only_op(view: NetworkView) -> Iterator[Problem]:
    """A DQ into LayerNorm, softmax, GELU or a 3-D deconv: no INT8 kernel, so the Q/DQ only round its input."""
    for dq in view.layers:
        if dq.kind != "DEQUANTIZE" or view.is_constant(dq.inputs[0]):
            continue  # a weight DQ is judged with its layer (half_quantized_weighted_op)
        users = _forward(view, [dq], lambda u: u.kind in DATA_MOVES, CHAIN_DEPTH)
        hits = [(u, kind) for u in users if (kind := _float_only(u)) is not None]
        if hits:
            names = ", ".join(f"{kind} {u.node!r}" for u, kind in hits)
            yield (
                dq,
                f"DQ {dq.name!r} feeds {names}, which TensorRT has no INT8 kernel for: the Q/DQ only round its "
                "input (LayerNorm: TensorRT#4242)",
                "do not quantize the input of this op; keep the Q/DQ for the INT8 layers that follow it",
            )


@lint_rule
def residual_identity_not_quantized(view: NetworkView) -> Iterator[Problem]:
    """conv + skip add whose skip input is float: the add cannot fuse into the conv with INT8 I/O (design rule 4)."""
    for add in view.layers:
        if add.kind != "ELEMENTWISE" or add.op != "SUM" or len(add.inputs) != 2:
            continue
        for conv_input, skip in (add.inputs, add.inputs[::-1]):
            conv = view.producer.get(conv_input) if conv_input is not None else None
            if conv is None or conv.kind != "CONVOLUTION" or not view.is_quantized_compute(conv):
                continue
            if view.source_dqs(skip) is None and not view.is_constant(skip):
                source = view.producer.get(skip) if skip is not None else None
                what = source.node if source is not None else skip
                yield (
                    add,
                    f"add {add.name!r} sums conv {conv.node!r} with the float skip input {what!r}, so the add cannot "
                    "fuse into the conv with INT8 I/O: the skip tensor is written and read as float (design rule 4)",
                    f"quantize the skip input {what!r} (Q/DQ on the add's input) and leave the conv output float",
                )
                break


def _forward(
    view: NetworkView, start: list[LayerInfo], through: Callable[[LayerInfo], bool], depth: int
) -> Iterator[LayerInfo]:
    """Consumers of ``start`` reached through layers that ``through`` accepts (each consumer reported once)."""
    seen: set[str] = set()
    frontier = list(start)
    for _ in range(depth):
        following = []
        for user in (u for layer in frontier for u in view.consumers_of(layer)):
            if user.name not in seen:
                seen.add(user.name)
                yield user
                if through(user):
                    following.append(user)
        frontier = following


def _from_int8_chain(view: NetworkView, tensor: str | None) -> bool:
    """Whether a quantized conv / matmul makes ``tensor`` through at most CHAIN_DEPTH non-compute layers.

    Wider than "activation / elementwise / pooling / shuffle": any float layer (LayerNorm, softmax...) counts,
    so that the rule stays quiet wherever an INT8 layer is near (a false alarm costs more trust than a miss).
    """
    seen: set[str] = set()
    frontier = [tensor]
    for _ in range(CHAIN_DEPTH):
        following = []
        for name in frontier:
            layer = view.producer.get(name) if name is not None else None
            if layer is None or layer.name in seen or layer.kind == "CONSTANT":
                continue
            seen.add(layer.name)
            if layer.kind in COMPUTE:
                if view.is_quantized_compute(layer):
                    return True
                continue  # a float conv / matmul: the chain is float from here
            following.extend(t for t in layer.inputs if t is not None and not view.is_constant(t))
        frontier = following
    return False


@lint_rule
def small_int8_island(view: NetworkView) -> Iterator[Problem]:
    """A quantized conv / matmul whose input is quantized from float layers and whose output reaches no Q within a
    few layers: one INT8 kernel paying for a Q and a float epilogue. Conservative: both sides must be float."""
    for layer in (la for la in view.layers if view.is_quantized_compute(la)):
        sources = view.source_dqs(layer.inputs[0]) or []
        qs = [view.producer.get(d.inputs[0]) for d in sources if d.inputs[0] is not None]
        if not qs or any(q is None or q.kind != "QUANTIZE" or _from_int8_chain(view, q.inputs[0]) for q in qs):
            continue
        if not any(u.kind == "QUANTIZE" for u in _forward(view, [layer], lambda u: u.kind not in COMPUTE, 4)):
            yield (
                layer,
                f"{layer.kind} {layer.name!r} is a lone INT8 layer: its input is quantized from float layers and "
                "its output reaches no Q, so the Q and the float epilogue may cost more than INT8 saves",
                "quantize its neighbours too (so the INT8 chain continues) or leave this layer in float",
            )


@lint_rule
def int8_channels_not_multiple_of_16(view: NetworkView) -> Iterator[Problem]:
    """Advice: INT8 conv channels (per group) that are not a multiple of 16 get padded by INT8 kernels."""
    for layer in (la for la in view.layers if la.kind == "CONVOLUTION" and view.is_quantized_compute(la)):
        shape = view.shapes.get(layer.inputs[0] or "", ())
        c_in, groups = (shape[1] if len(shape) > 1 else -1), max(layer.groups, 1)
        if c_in <= 0 or (groups > 1 and groups == c_in):
            continue  # unknown channels, or depthwise (its kernels do not pad channels to 16)
        if c_in <= 4 and _fed_by_network_input(view, layer):
            continue  # an image's 1-4 channels: the first conv is padded whatever one does
        counts = (("input", c_in // groups), ("output", layer.out_maps // groups))
        bad = [f"{n} {what}" for what, n in counts if n % 16]
        if bad:
            yield (
                layer,
                f"(advice) INT8 conv {layer.name!r} has {' and '.join(bad)} channels{' per group' * (groups > 1)}, "
                "not a multiple of 16: INT8 tensor-core kernels pad them, paying MACs and bytes for zeros",
                "round the channel counts to a multiple of 16 where the architecture allows it",
            )


def _fed_by_network_input(view: NetworkView, layer: LayerInfo) -> bool:
    for dq in view.source_dqs(layer.inputs[0]) or []:
        q = view.producer.get(dq.inputs[0]) if dq.inputs[0] is not None else None
        if q is None or q.kind != "QUANTIZE":
            continue
        source = view.through(q.inputs[0], ("CAST",))  # a float16 network casts its float32 input first
        fed = q.inputs[0] if source is None else (source.inputs[0] if source.kind == "CAST" else None)
        if q.inputs[0] in view.network_inputs or fed in view.network_inputs:
            return True
    return False


#: The rules, in report order; a new rule is one function appended here.
LINT_RULES: list[Callable[[NetworkView], list[LintFinding]]] = [
    half_quantized_weighted_op,
    concat_scales_differ,
    q_between_conv_and_activation,
    qdq_on_network_output,
    qdq_around_float_only_op,
    residual_identity_not_quantized,
    small_int8_island,
    int8_channels_not_multiple_of_16,
]


def lint_network(
    network: Any, rules: Iterable[Callable[[NetworkView], list[LintFinding]]] | None = None
) -> list[LintFinding]:
    """Check a strongly typed network's Q/DQ placement against TensorRT's documented rules.

    Args:
        network: an ``INetworkDefinition`` (from :func:`~fx2trt_pipeline.network.network.network_from_graph_module`
            or built by hand), before the engine build.
        rules: the rules to run; :data:`LINT_RULES` when ``None``.

    Returns:
        The findings, rule by rule in the rules' order, each rule's in network layer order.
    """
    view = NetworkView(network)
    return [finding for rule in (LINT_RULES if rules is None else rules) for finding in rule(view)]


__all__ = ["LINT_RULES", "LayerInfo", "LintFinding", "NetworkView", "lint_network", "lint_rule"]
