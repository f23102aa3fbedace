"""Per-build conversion state: the network, values by FX node, weights kept alive, and layer naming.

One :class:`ConversionContext` exists per :func:`network_from_graph_module` call and is passed
explicitly to every converter and layer builder; nothing is stored on modules or globals.

Naming: every TensorRT layer is named after the FX node it implements, ``node.name`` or
``node.name + "." + suffix`` when a converter adds several layers (:meth:`ConversionContext.name`).
:meth:`ConversionContext.add` enforces it, so the network executor, per-layer reports and validators
can map every layer back to the graph with :func:`node_name_of_layer`.

Example:
    >>> from fx2trt_pipeline.network.context import node_name_of_layer
    >>> node_name_of_layer("layer1_0_conv1.kernel_2d")
    'layer1_0_conv1'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch.fx import GraphModule, Node

from fx2trt_pipeline.errors import ConversionError, InternalError
from fx2trt_pipeline.trt_types import trt_dtype

ITensor = Any  # trt.ITensor; typed loosely because the TensorRT module is resolved at run time


@dataclass(frozen=True)
class ConversionOptions:
    """Settings of one conversion (defaults resolved in :func:`network_from_graph_module`).

    Attributes:
        output_names: names of the network outputs in graph-output order; ``output0, output1, ...``
            when ``None``.
    """

    output_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class QuantizedTensor:
    """An int8 tensor from ``torch.quantize_per_tensor/per_channel`` with the scale it was made with.

    torch.ao graphs call ``.dequantize()`` without a scale argument (the scale travels with the
    quantized tensor), so the dequantize converter reads it from here.
    """

    tensor: ITensor
    scale: ITensor
    axis: int | None


def node_name_of_layer(layer_name: str) -> str:
    """The FX node name a layer was named after (the part before the first ``.``)."""
    return layer_name.split(".", 1)[0]


@dataclass
class ConversionContext:
    """Everything one conversion needs; created by :func:`network_from_graph_module`.

    Attributes:
        trt: the TensorRT module (``trt_api.get_trt()``).
        network: the strongly typed INetworkDefinition being built.
        gm: the GraphModule being converted.
        options: the conversion options.
        values: converted value of each node: ITensor, QuantizedTensor, torch.Tensor (get_attr
            constants), Python scalars, or tuples/lists of those.
        layers: layer name -> FX node name, in creation order.
        recorded_errors: TensorRT error messages seen during conversion (when our logger is in use).
        logger: the recording ``trt.ILogger`` given to a builder we created (kept alive with the context).
    """

    trt: ModuleType
    network: Any
    gm: GraphModule
    options: ConversionOptions = field(default_factory=ConversionOptions)
    values: dict[Node, Any] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)
    recorded_errors: list[str] = field(default_factory=list)
    logger: Any = None
    _weights: list[np.ndarray] = field(default_factory=list)
    _constants: dict[tuple[int, torch.dtype], tuple[torch.Tensor, ITensor]] = field(default_factory=dict)
    _get_attr_names: dict[int, str] = field(default_factory=dict)
    _node_names: set[str] = field(default_factory=set)
    _tensor_names: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._node_names = {n.name for n in self.gm.graph.nodes}

    # ---- naming ---------------------------------------------------------------------------------

    @staticmethod
    def name(base: Node | str, suffix: str | None = None) -> str:
        """The layer name for ``base`` (a node or a name already derived from one) and an optional suffix.

        Example: ``ctx.name(node)`` -> ``"layer1_0_conv1"``; ``ctx.name(node, "bias")`` ->
        ``"layer1_0_conv1.bias"``; ``ctx.name("conv.kernel", "2d")`` -> ``"conv.kernel.2d"``.
        """
        text = base.name if isinstance(base, Node) else str(base)
        return text if suffix is None else f"{text}.{suffix}"

    def add(self, layer: Any, name: str, what: str = "layer") -> Any:
        """Check that TensorRT created ``layer``, name it and its outputs, and record it.

        Raises:
            ConversionError: TensorRT refused to create the layer (its logged error is included).
            InternalError: the name does not start with an FX node name or is already taken.
        """
        if layer is None:
            logged = "; ".join(self.recorded_errors[-3:]) or "see the TensorRT log above"
            raise ConversionError(f"TensorRT refused to add the {what} {name!r}: {logged}")
        node_name = node_name_of_layer(name)
        if node_name not in self._node_names:
            raise InternalError(f"Layer name {name!r} does not start with an FX node name")
        if name in self.layers:
            raise InternalError(f"Two layers named {name!r}; converters must pass distinct suffixes")
        layer.name = name
        self.layers[name] = node_name
        for i in range(layer.num_outputs):
            out_name = name if layer.num_outputs == 1 else f"{name}:{i}"
            layer.get_output(i).name = out_name
            self._tensor_names.add(out_name)
        return layer

    # ---- graph access ----------------------------------------------------------------------------

    def module(self, node: Node) -> torch.nn.Module:
        """The submodule a ``call_module`` node calls."""
        return self.gm.get_submodule(str(node.target))

    def remember_get_attr(self, node: Node, value: Any) -> None:
        """Record a get_attr tensor so that its constant layer is created once and named after ``node``."""
        if isinstance(value, torch.Tensor):
            self._get_attr_names[id(value)] = node.name

    # ---- constants and weights -------------------------------------------------------------------

    def trt_dtype(self, dtype: torch.dtype) -> Any:
        """The TensorRT DataType of a torch dtype."""
        return trt_dtype(dtype)

    def keep(self, array: np.ndarray) -> np.ndarray:
        """Keep ``array`` alive until the engine is built (``trt.Weights`` does not copy)."""
        array = np.ascontiguousarray(array)
        self._weights.append(array)
        return array

    def weights(self, tensor: torch.Tensor | None, dtype: torch.dtype | None = None) -> Any:
        """``trt.Weights`` holding ``tensor`` (empty Weights for ``None``), kept alive by the context.

        ``dtype`` defaults to the tensor's own float dtype (float16 weights stay float16: a strongly typed
        layer needs weights of its input's type) and to float32 for empty Weights and float64 tensors.
        """
        if dtype is None:
            floating = tensor is not None and tensor.dtype in (torch.float16, torch.float32)
            dtype = tensor.dtype if floating else torch.float32
        if tensor is None:
            return self.trt.Weights(self.trt_dtype(dtype))
        return self.trt.Weights(self.keep(_to_numpy(tensor, dtype)))

    def constant(
        self,
        value: torch.Tensor | np.ndarray | float | int,
        name: str,
        dtype: torch.dtype | None = None,
        shape: Sequence[int] | None = None,
    ) -> ITensor:
        """An IConstantLayer output holding ``value`` (optionally cast to ``dtype`` / reshaped)."""
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if dtype is None:
            dtype = torch.float32 if tensor.dtype == torch.float64 else tensor.dtype
        tensor = tensor.detach().to("cpu", dtype)
        if shape is not None:
            tensor = tensor.reshape(tuple(shape))
        array = self.keep(_to_numpy(tensor, dtype))
        layer = self.network.add_constant(tuple(tensor.shape), self.trt.Weights(array))
        return self.add(layer, name, "constant").get_output(0)

    def as_tensor(self, value: Any, name: str, dtype: torch.dtype | None = None) -> ITensor:
        """``value`` as an ITensor: ITensors pass through, torch tensors become (cached) constants.

        A get_attr tensor becomes one constant named after its get_attr node, shared by all users.
        """
        if isinstance(value, QuantizedTensor):
            raise ConversionError(f"{name}: a quantized (qint8) tensor must be dequantized before use")
        if not isinstance(value, torch.Tensor):
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                return value
            raise ConversionError(f"{name}: expected a tensor, got {type(value).__name__} {value!r}")
        default = torch.float32 if value.dtype == torch.float64 else value.dtype
        dtype = dtype or default
        key = (id(value), dtype)
        cached = self._constants.get(key)
        if cached is not None:
            return cached[1]
        base = self._get_attr_names.get(id(value))
        if base is None:
            const_name = name
        else:
            const_name = base if dtype == default else self.name(base, str(dtype).replace("torch.", ""))
        out = self.constant(value, const_name, dtype)
        self._constants[key] = (value, out)  # holding the tensor keeps its id from being reused
        return out


def _to_numpy(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    tensor = tensor.detach().to("cpu", dtype).contiguous()
    if dtype == torch.bfloat16:
        raise ConversionError("bfloat16 constants are not supported; cast the model to float32")
    return tensor.numpy()
