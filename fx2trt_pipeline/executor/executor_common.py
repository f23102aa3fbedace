"""Shared pieces of the network executor: the layer-handler registry, dtypes, dims helpers.

A *layer handler* computes one TensorRT layer in torch. It receives the layer already cast to its
concrete class (``IConvolutionLayer``...) and the layer's input tensors (``None`` for an unset
optional input), and returns the output tensor(s). Handlers read TensorRT enums by ``.name``
(``layer.op.name == "SUM"``) so that they need no TensorRT import and work with either library.

Example:
    >>> import fx2trt_pipeline.executor.network_executor  # importing it registers every handler
    >>> from fx2trt_pipeline.executor.executor_common import lookup_handler
    >>> lookup_handler("CONVOLUTION").class_name
    'IConvolutionLayer'
    >>> lookup_handler("LRN") is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline.errors import ConversionError, InternalError

Inputs = list[torch.Tensor | None]
HandlerResult = torch.Tensor | Sequence[torch.Tensor]
HandlerFn = Callable[[Any, Inputs], HandlerResult]


@dataclass(frozen=True)
class LayerHandler:
    """A registered handler: the LayerType name it serves and the concrete layer class name."""

    layer_type: str
    class_name: str
    fn: HandlerFn


_HANDLERS: dict[str, LayerHandler] = {}


def layer_handler(layer_type: str, class_name: str) -> Callable[[HandlerFn], HandlerFn]:
    """Register ``fn`` as the handler of ``LayerType.<layer_type>`` (a duplicate is a bug)."""

    def register(fn: HandlerFn) -> HandlerFn:
        if layer_type in _HANDLERS:
            raise InternalError(
                f"Two executor handlers for LayerType.{layer_type}: "
                f"{_HANDLERS[layer_type].fn.__name__} and {fn.__name__}"
            )
        _HANDLERS[layer_type] = LayerHandler(layer_type, class_name, fn)
        return fn

    return register


def lookup_handler(layer_type: str) -> LayerHandler | None:
    """The handler for a LayerType name, or ``None`` when the executor does not implement it."""
    return _HANDLERS.get(layer_type)


def supported_layer_types() -> list[str]:
    """Sorted LayerType names the executor implements."""
    return sorted(_HANDLERS)


def optional_input(inputs: Inputs, index: int) -> torch.Tensor | None:
    """The layer's input ``index``, or None when the layer has fewer inputs."""
    return inputs[index] if len(inputs) > index else None


def dims(value: Any) -> tuple[int, ...]:
    """A TensorRT Dims (or ``None``) as a tuple of ints."""
    return () if value is None else tuple(int(d) for d in value)


def shape_values(tensor: torch.Tensor) -> tuple[int, ...]:
    """The values of a 0-d or 1-d shape tensor as ints."""
    return tuple(int(v) for v in tensor.reshape(-1).tolist())


def axes_from_mask(mask: int, rank: int) -> list[int]:
    """Dimensions set in a TensorRT axes bitmask (bit i = dimension i)."""
    return [d for d in range(rank) if mask >> d & 1]


def require(condition: bool, layer: Any, message: str) -> None:
    """Raise ConversionError naming ``layer`` when a network uses a layer in a way we cannot run."""
    if not condition:
        raise ConversionError(f"Layer {layer.name!r}: {message}")


def weights_tensor(weights: Any, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """TensorRT Weights (read back as a numpy array) as a torch tensor on ``like``'s device.

    Returns ``None`` for empty weights (an unset kernel, bias, shift...).
    """
    if weights is None or getattr(weights, "size", 0) == 0:
        return None
    t = torch.from_numpy(weights.copy()).to(like.device)
    return t.to(dtype) if dtype is not None else t
