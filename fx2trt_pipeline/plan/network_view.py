"""The strongly typed network as plain data, indexed once: producer and consumers of each tensor, Q/DQ scales.

The placement lint and the precision audit both ask "does this conv read int8 data and int8 weights?": TensorRT
moves a DQ across data moves, max-pools and concats, so the answer looks through them (:meth:`source_dqs`).
Layer attributes are read with a temporary cast to the concrete class, ``layer.type`` first (after the cast,
``type`` on IActivationLayer / IPoolingLayer means the activation / pooling kind), and the class is restored so
that wrappers the caller holds keep behaving as ``ILayer``.

Example:
    >>> from fx2trt_pipeline import trt_api
    >>> from fx2trt_pipeline.engine.engine_builder import create_builder
    >>> trt = trt_api.get_trt()
    >>> network = create_builder().create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    >>> relu = network.add_activation(network.add_input("x", trt.float32, (1, 4)), trt.ActivationType.RELU)
    >>> relu.name = "relu"
    >>> view = NetworkView(network)
    >>> [(info.name, info.kind, info.op) for info in view.layers], view.producer[relu.get_output(0).name].name
    ([('relu', 'ACTIVATION', 'RELU')], 'relu')
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.network.context import node_name_of_layer

COMPUTE = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")
#: Layers that only move or reshape data: Q/DQ commute with them, so a DQ seen through them still feeds the kernel.
DATA_MOVES = ("SHUFFLE", "SLICE", "PADDING", "SQUEEZE", "UNSQUEEZE", "IDENTITY")
#: How many layers the island rule looks through: resnet's fc reaches its conv through 6 (pool, Q/DQ, add...).
CHAIN_DEPTH = 8
#: The concrete classes whose attributes the rules read (TensorRT's Python API hands out ILayer).
_CLASSES = {
    "CONVOLUTION": "IConvolutionLayer",
    "DECONVOLUTION": "IDeconvolutionLayer",
    "ACTIVATION": "IActivationLayer",
}
_CLASSES |= {"POOLING": "IPoolingLayer", "ELEMENTWISE": "IElementWiseLayer", "CONSTANT": "IConstantLayer"}


@dataclass(frozen=True)
class LayerInfo:
    """What the rules read of one network layer (plain data: no TensorRT object is kept).

    Attributes:
        kind: the LayerType name (``CONVOLUTION``, ``QUANTIZE``...).
        op: the activation / pooling / elementwise kind (``RELU``, ``MAX``, ``SUM``), else ``""``.
        inputs, outputs: tensor names (``None`` for an unset optional input).
        groups, out_maps, spatial: conv / deconv groups, output channels and kernel rank.
    """

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
            info = _layer_info(layer, trt)
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


def _layer_info(layer: Any, trt: Any) -> LayerInfo:
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
    return LayerInfo(layer.name, kind, extra.pop("op", ""), inputs, outputs, **extra)


@contextlib.contextmanager
def _cast(layer: Any, kind: str, trt: Any) -> Iterator[None]:
    """Give ``layer`` its concrete class for a moment: pybind11 may hand the same wrapper to the caller."""
    original, layer.__class__ = layer.__class__, getattr(trt, _CLASSES[kind]) if kind in _CLASSES else layer.__class__
    try:
        yield
    finally:
        layer.__class__ = original


def _constant_value(layer: Any, trt: Any) -> np.ndarray:
    with _cast(layer, "CONSTANT", trt):
        return np.array(layer.weights, dtype=np.float64, copy=True).reshape(-1)


__all__ = ["CHAIN_DEPTH", "COMPUTE", "DATA_MOVES", "LayerInfo", "NetworkView"]
