"""Placement lint: Q/DQ placements TensorRT documents as costly, found on the network before the build.

::

    INetworkDefinition (ours, torch.ao's or PT2E's graph: all lower to IQuantize / IDequantize layers)
      -> NetworkView      indexed once: producer and consumers of each tensor, layer kinds, Q/DQ scales
      -> LINT_RULES, in order, each (NetworkView) -> [LintFinding]
           half_quantized_weighted_op       conv / deconv / matmul with only one of data, weight dequantized
           concat_scales_differ             concat inputs (and its output Q) with different scales
           q_between_conv_and_activation    conv -> Q -> DQ -> activation breaks the conv+activation fusion
           qdq_on_network_output            a network output made by a Q or DQ layer
           qdq_around_float_only_op         DQ into LayerNorm / softmax / GELU / 3-D deconv (no INT8 kernel)
           residual_identity_not_quantized  conv + float skip input: quantize the skip input
           small_int8_island                a lone INT8 conv / matmul between float layers
           int8_channels_not_multiple_of_16 (advice) INT8 conv channels that tensor-core kernels pad
      -> "LINT <rule> <node>: <message>; <remedy>", one line each, naming the FX node of the layer

A new rule is one function ``(NetworkView) -> list[LintFinding]`` appended to :data:`LINT_RULES`.
Layer attributes are read with a temporary cast to the concrete class, ``layer.type`` first (DESIGN.md:
on IActivationLayer ``type`` then means the activation kind), and the class is restored so that wrappers
the caller holds keep behaving as ``ILayer``.

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
    LINT qdq_on_network_output x_dq: network output 'x_dq' is made by a DEQUANTIZE layer ...; ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.network.context import node_name_of_layer

COMPUTE = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")
#: Layers that only move or reshape data: Q/DQ commute with them, so a DQ seen through them still feeds the kernel.
DATA_MOVES = ("SHUFFLE", "SLICE", "PADDING", "SQUEEZE", "UNSQUEEZE", "IDENTITY")
#: Float layers TensorRT fuses around an INT8 kernel (epilogues, pooling, reshapes): an INT8 chain runs through them.
CHAIN = (*DATA_MOVES, "ACTIVATION", "ELEMENTWISE", "POOLING", "REDUCE", "CONCATENATION", "SCALE", "RESIZE", "UNARY")
GELU = ("GELU_ERF", "GELU_TANH")
#: How many float layers the island rule looks through: resnet's fc reaches its conv through 6.
CHAIN_DEPTH = 8
_CLASSES = {
    "CONVOLUTION": "IConvolutionLayer",
    "DECONVOLUTION": "IDeconvolutionLayer",
    "ACTIVATION": "IActivationLayer",
    "POOLING": "IPoolingLayer",
    "ELEMENTWISE": "IElementWiseLayer",
    "CONSTANT": "IConstantLayer",
}


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


@dataclass(frozen=True)
class LayerInfo:
    """What the rules read of one network layer (plain data: no TensorRT object is kept).

    Attributes:
        kind: the LayerType name (``CONVOLUTION``, ``QUANTIZE``...).
        op: the activation / pooling / elementwise kind (``RELU``, ``MAX``, ``SUM``), else ``""``.
        inputs, outputs: tensor names (``None`` for an unset optional input).
        groups, out_maps, spatial: conv / deconv groups, output channels and kernel rank.
    """

    index: int
    name: str
    kind: str
    op: str
    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    groups: int = 1
    out_maps: int = 0
    spatial: int = 0

    @property
    def node(self) -> str:
        return node_name_of_layer(self.name)


class NetworkView:
    """A network indexed once: layers in order, producer and consumers of each tensor, shapes, Q/DQ scales."""

    def __init__(self, network: Any) -> None:
        trt = trt_api.get_trt()
        self.layers: list[LayerInfo] = []
        self.producer: dict[str, LayerInfo] = {}
        self.consumers: dict[str, list[LayerInfo]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
        self.network_outputs = [network.get_output(i).name for i in range(network.num_outputs)]
        constants: dict[str, Any] = {}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            info = _layer_info(i, layer, trt)
            self.layers.append(info)
            for out in range(layer.num_outputs):
                tensor = layer.get_output(out)
                self.producer[tensor.name] = info
                self.shapes[tensor.name] = tuple(int(d) for d in tensor.shape)
            for name in info.inputs:
                if name is not None:
                    self.consumers.setdefault(name, []).append(info)
            if info.kind == "CONSTANT":
                constants[info.outputs[0]] = layer
        for i in range(network.num_inputs):
            self.shapes[network.get_input(i).name] = tuple(int(d) for d in network.get_input(i).shape)
        # Only the scale constants are copied out; weight constants can be megabytes.
        self._scales: dict[str, np.ndarray] = {}
        for info in self.layers:
            if info.kind in ("QUANTIZE", "DEQUANTIZE") and len(info.inputs) > 1 and info.inputs[1] is not None:
                source = self.through(info.inputs[1], DATA_MOVES + ("CAST",))
                if source is not None and source.kind == "CONSTANT":
                    self._scales[info.name] = _constant_value(constants[source.outputs[0]], trt)

    def through(self, tensor: str | None, kinds: Iterable[str]) -> LayerInfo | None:
        """The producer of ``tensor``, looking through single-input layers of ``kinds`` (their input 0)."""
        layer = self.producer.get(tensor) if tensor is not None else None
        while layer is not None and layer.kind in kinds and layer.inputs:
            layer = self.producer.get(layer.inputs[0]) if layer.inputs[0] is not None else None
        return layer

    def source_dqs(self, tensor: str | None, depth: int = 0) -> list[LayerInfo] | None:
        """The DQ layers ``tensor`` is made of through data moves, max pooling and concatenation; None when
        any part of it does not come from a DQ (then TensorRT cannot give the consumer int8 data)."""
        layer = self.producer.get(tensor) if tensor is not None else None
        if layer is None or depth > 2 * CHAIN_DEPTH:
            return None
        if layer.kind == "DEQUANTIZE":
            return [layer]
        if layer.kind == "CONCATENATION":
            sources = [self.source_dqs(t, depth + 1) for t in layer.inputs]
            return None if any(s is None for s in sources) else [d for s in sources for d in s or ()]
        if layer.kind in DATA_MOVES or (layer.kind == "POOLING" and layer.op == "MAX"):
            return self.source_dqs(layer.inputs[0], depth + 1)
        return None

    def is_constant(self, tensor: str | None) -> bool:
        source = self.through(tensor, DATA_MOVES + ("CAST",))
        return source is not None and source.kind == "CONSTANT"

    def scale(self, qdq: LayerInfo) -> np.ndarray | None:
        """The scale of a Q or DQ layer when it is a constant (None when it is computed)."""
        return self._scales.get(qdq.name)

    def quantized_inputs(self, layer: LayerInfo) -> tuple[bool, bool]:
        """(data from DQ, weight from DQ) of a conv / deconv / matmul; a kernel given as layer weights is float."""
        data = bool(layer.inputs) and self.source_dqs(layer.inputs[0]) is not None
        weight = len(layer.inputs) > 1 and self.source_dqs(layer.inputs[1]) is not None
        return data, weight

    def is_quantized_compute(self, layer: LayerInfo) -> bool:
        return layer.kind in COMPUTE and all(self.quantized_inputs(layer))

    def consumers_of(self, layer: LayerInfo) -> list[LayerInfo]:
        return [c for out in layer.outputs for c in self.consumers.get(out, [])]

    def after_bias(self, layer: LayerInfo) -> LayerInfo:
        """The layer that finishes ``layer``'s output: a matmul's bias add is a separate ELEMENTWISE SUM."""
        users = self.consumers_of(layer)
        if len(users) == 1 and users[0].kind == "ELEMENTWISE" and users[0].op == "SUM":
            others = [t for t in users[0].inputs if t not in layer.outputs]
            if others and all(self.is_constant(t) for t in others):
                return users[0]
        return layer


def _layer_info(index: int, layer: Any, trt: Any) -> LayerInfo:
    kind = layer.type.name  # before any cast: on the concrete classes `type` means something else
    inputs = tuple(t.name if t is not None else None for t in (layer.get_input(j) for j in range(layer.num_inputs)))
    outputs = tuple(layer.get_output(j).name for j in range(layer.num_outputs))
    extra: dict[str, Any] = {}
    with _cast(layer, kind, trt):
        if kind in ("ACTIVATION", "POOLING"):
            extra["op"] = layer.type.name
        elif kind == "ELEMENTWISE":
            extra["op"] = layer.op.name
        elif kind in ("CONVOLUTION", "DECONVOLUTION"):
            extra.update(
                groups=int(layer.num_groups), out_maps=int(layer.num_output_maps), spatial=len(layer.kernel_size_nd)
            )
    return LayerInfo(index, layer.name, kind, extra.pop("op", ""), inputs, outputs, **extra)


class _cast:
    """Give ``layer`` its concrete class for a moment (pybind11 may hand the same wrapper to the caller)."""

    def __init__(self, layer: Any, kind: str, trt: Any) -> None:
        self.layer, self.cls, self.original = layer, getattr(trt, _CLASSES.get(kind, ""), None), layer.__class__

    def __enter__(self) -> None:
        if self.cls is not None:
            self.layer.__class__ = self.cls

    def __exit__(self, *exc: object) -> None:
        self.layer.__class__ = self.original


def _constant_value(layer: Any, trt: Any) -> np.ndarray:
    with _cast(layer, "CONSTANT", trt):
        return np.array(layer.weights, dtype=np.float64, copy=True).reshape(-1)


def _same_scale(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=0.0))


def _scale_text(value: np.ndarray | None) -> str:
    if value is None:
        return "computed"
    return f"{value[0]:.4g}" if value.size == 1 else f"per-channel[{value.size}]"


def _finding(rule: str, layer: LayerInfo, message: str, remedy: str) -> LintFinding:
    return LintFinding(rule, layer.node, layer.name, message, remedy)


# ---- rules ------------------------------------------------------------------------------------------------------


def half_quantized_weighted_op(view: NetworkView) -> list[LintFinding]:
    """Conv / deconv / matmul with a dequantized data input and a float weight, or the reverse (TensorRT#3197)."""
    out = []
    for layer in view.layers:
        if layer.kind not in COMPUTE:
            continue
        data, weight = view.quantized_inputs(layer)
        if data == weight:
            continue
        what = "the data input is dequantized but the weight is float" if data else "the weight is int8 + DQ but "
        if not data:
            what += "the data input has no Q/DQ"
        missing = "weight (int8 constant -> DQ)" if data else "data input (Q/DQ pair)"
        out.append(
            _finding(
                "half_quantized_weighted_op",
                layer,
                f"{layer.kind} {layer.name!r}: {what}, so TensorRT runs it in float (TensorRT#3197)",
                f"quantize its {missing} too, or remove the other Q/DQ to keep it float on purpose",
            )
        )
    return out


def concat_scales_differ(view: NetworkView) -> list[LintFinding]:
    """Concat whose dequantized inputs (or output Q) have different scales: TensorRT requantizes (TensorRT#4366)."""
    out = []
    for layer in view.layers:
        if layer.kind != "CONCATENATION":
            continue
        dqs = [d for t in layer.inputs for d in (view.source_dqs(t) or ())]
        named = [(d.node, view.scale(d)) for d in dqs]
        named += [(c.node, view.scale(c)) for c in view.consumers_of(layer) if c.kind == "QUANTIZE"]
        known = [s for _, s in named if s is not None]
        if not dqs or len(known) < 2 or all(_same_scale(known[0], s) for s in known[1:]):
            continue
        scales = ", ".join(f"{node} {_scale_text(s)}" for node, s in named)
        out.append(
            _finding(
                "concat_scales_differ",
                layer,
                f"concat {layer.name!r} joins tensors quantized with different scales ({scales}), so TensorRT "
                "cannot concatenate in INT8 without requantizing (TensorRT#4366)",
                "give all concat inputs and its output one shared scale (e.g. the largest amax)",
            )
        )
    return out


def q_between_conv_and_activation(view: NetworkView) -> list[LintFinding]:
    """conv / matmul -> Q -> DQ -> activation: the Q splits the conv+activation fusion (TensorRT#993)."""
    out = []
    for layer in view.layers:
        if layer.kind not in COMPUTE:
            continue
        end = view.after_bias(layer)
        for q in (c for c in view.consumers_of(end) if c.kind == "QUANTIZE"):
            dqs = [d for d in view.consumers_of(q) if d.kind == "DEQUANTIZE"]
            acts = [a for d in dqs for a in view.consumers_of(d) if a.kind == "ACTIVATION"]
            if acts:
                out.append(
                    _finding(
                        "q_between_conv_and_activation",
                        q,
                        f"Q/DQ between {layer.kind} {layer.node!r} and activation {acts[0].node!r} "
                        f"({acts[0].op}) breaks the conv+activation fusion (TensorRT#993)",
                        f"remove this Q/DQ and quantize after the activation {acts[0].node!r} instead",
                    )
                )
    return out


def qdq_on_network_output(view: NetworkView) -> list[LintFinding]:
    """A network output made by a Q or DQ layer (TensorRT#2604)."""
    out = []
    for name in view.network_outputs:
        layer = view.producer.get(name)
        if layer is not None and layer.kind in ("QUANTIZE", "DEQUANTIZE"):
            out.append(
                _finding(
                    "qdq_on_network_output",
                    layer,
                    f"network output {name!r} is made by a {layer.kind} layer {layer.name!r}, which TensorRT runs as "
                    "a separate kernel or refuses to fuse (TensorRT#2604)",
                    "drop the Q/DQ pair on the graph output; the last layer's float output needs none",
                )
            )
    return out


def _float_only(view: NetworkView, layer: LayerInfo) -> str | None:
    if layer.kind in ("NORMALIZATION", "SOFTMAX"):
        return layer.kind
    if layer.kind == "ACTIVATION" and layer.op in GELU:
        return layer.op
    if layer.kind == "DECONVOLUTION" and layer.spatial == 3:
        return "3-D DECONVOLUTION"
    return None


def qdq_around_float_only_op(view: NetworkView) -> list[LintFinding]:
    """A DQ into LayerNorm, softmax, GELU or a 3-D deconv: no INT8 kernel, so the Q/DQ only add kernels."""
    out = []
    for dq in view.layers:
        if dq.kind != "DEQUANTIZE" or view.is_constant(dq.inputs[0]):
            continue  # a weight DQ is judged with its layer (half_quantized_weighted_op)
        users = list(_forward(view, [dq], DATA_MOVES, CHAIN_DEPTH))
        hits = [(u, kind) for u in users if (kind := _float_only(view, u)) is not None]
        if hits:
            names = ", ".join(f"{kind} {u.node!r}" for u, kind in hits)
            out.append(
                _finding(
                    "qdq_around_float_only_op",
                    dq,
                    f"DQ {dq.name!r} feeds {names}, which TensorRT has no INT8 kernel for (LayerNorm: TensorRT#4242)",
                    "do not quantize the input of this op; the Q/DQ pair only costs kernels here",
                )
            )
    return out


def residual_identity_not_quantized(view: NetworkView) -> list[LintFinding]:
    """conv + skip add whose skip input is float: the add cannot fuse into the conv with INT8 I/O (design rule 4)."""
    out = []
    for add in view.layers:
        if add.kind != "ELEMENTWISE" or add.op != "SUM" or len(add.inputs) != 2:
            continue
        for i, tensor in enumerate(add.inputs):
            conv = view.producer.get(tensor) if tensor is not None else None
            if conv is None or conv.kind != "CONVOLUTION" or not view.is_quantized_compute(conv):
                continue
            skip = add.inputs[1 - i]
            if view.source_dqs(skip) is not None or view.is_constant(skip):
                continue
            source = view.producer.get(skip) if skip is not None else None
            what = source.node if source is not None else skip
            out.append(
                _finding(
                    "residual_identity_not_quantized",
                    add,
                    f"add {add.name!r} sums conv {conv.node!r} with the float skip input {what!r}, so the add cannot "
                    "fuse into the conv with INT8 I/O (design rule 4)",
                    f"quantize the skip input {what!r} (Q/DQ on the add's input) and leave the conv output float",
                )
            )
            break
    return out


def _forward(view: NetworkView, start: list[LayerInfo], kinds: Iterable[str], depth: int) -> Iterator[LayerInfo]:
    """Consumers of ``start`` reached through layers of ``kinds`` (each consumer reported once)."""
    seen: set[str] = set()
    frontier = list(start)
    for _ in range(depth):
        following = []
        for layer in frontier:
            for user in view.consumers_of(layer):
                if user.name not in seen:
                    seen.add(user.name)
                    yield user
                    if user.kind in kinds:
                        following.append(user)
        frontier = following


def _from_int8_chain(view: NetworkView, tensor: str | None) -> bool:
    """Whether ``tensor`` is made (through float chain layers and Q/DQ) by a quantized conv / matmul."""
    seen: set[str] = set()
    frontier = [tensor]
    for _ in range(CHAIN_DEPTH):
        following = []
        for name in frontier:
            layer = view.producer.get(name) if name is not None else None
            if layer is None or layer.name in seen:
                continue
            seen.add(layer.name)
            if view.is_quantized_compute(layer):
                return True
            if layer.kind in CHAIN or layer.kind in ("QUANTIZE", "DEQUANTIZE"):
                data = layer.inputs if layer.kind in ("ELEMENTWISE", "CONCATENATION") else layer.inputs[:1]
                following.extend(t for t in data if not view.is_constant(t))
        frontier = following
    return False


def small_int8_island(view: NetworkView) -> list[LintFinding]:
    """A quantized conv / matmul whose input comes from float layers and whose output reaches no Q: one INT8
    kernel paying for a Q and a float epilogue. Conservative: both sides must be float."""
    out = []
    for layer in view.layers:
        if not view.is_quantized_compute(layer):
            continue
        sources = view.source_dqs(layer.inputs[0]) or []
        qs = [view.producer.get(d.inputs[0]) for d in sources if d.inputs[0] is not None]
        if not qs or any(q is None or q.kind != "QUANTIZE" or _from_int8_chain(view, q.inputs[0]) for q in qs):
            continue
        chain = tuple(k for k in CHAIN if k not in ("CONCATENATION",))
        if any(u.kind == "QUANTIZE" for u in _forward(view, [layer], chain, 4)):
            continue
        out.append(
            _finding(
                "small_int8_island",
                layer,
                f"{layer.kind} {layer.name!r} is a lone INT8 layer: its input is quantized from float layers and "
                "its output reaches no Q, so the Q and the float epilogue may cost more than INT8 saves",
                "quantize its neighbours too (so the INT8 chain continues) or leave this layer in float",
            )
        )
    return out


def int8_channels_not_multiple_of_16(view: NetworkView) -> list[LintFinding]:
    """Advice: INT8 conv channels (per group) that are not a multiple of 16 get padded by INT8 kernels."""
    out = []
    for layer in view.layers:
        if layer.kind != "CONVOLUTION" or not view.is_quantized_compute(layer):
            continue
        shape = view.shapes.get(layer.inputs[0] or "", ())
        c_in, groups = (shape[1] if len(shape) > 1 else -1), max(layer.groups, 1)
        if c_in <= 0 or (groups > 1 and groups == c_in):
            continue  # unknown channels, or depthwise (its kernels do not pad channels to 16)
        if c_in <= 4 and _fed_by_network_input(view, layer):
            continue  # an image's 1-4 channels: the first conv is padded whatever one does
        bad = [f"{n // groups} {what}" for what, n in (("input", c_in), ("output", layer.out_maps)) if (n // groups) % 16]
        if bad:
            per = " per group" if groups > 1 else ""
            out.append(
                _finding(
                    "int8_channels_not_multiple_of_16",
                    layer,
                    f"(advice) INT8 conv {layer.name!r} has {' and '.join(bad)} channels{per}, not a multiple of 16: "
                    "INT8 tensor-core kernels pad them, paying MACs and bytes for zeros",
                    "round the channel counts to a multiple of 16 where the architecture allows it",
                )
            )
    return out


def _fed_by_network_input(view: NetworkView, layer: LayerInfo) -> bool:
    for dq in view.source_dqs(layer.inputs[0]) or []:
        q = view.producer.get(dq.inputs[0]) if dq.inputs[0] is not None else None
        if q is not None and q.kind == "QUANTIZE" and q.inputs[0] in view.network_inputs:
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


def lint_network(network: Any, rules: Iterable[Callable[[NetworkView], list[LintFinding]]] | None = None) -> list[LintFinding]:
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


__all__ = ["LINT_RULES", "LayerInfo", "LintFinding", "NetworkView", "lint_network"]
