"""torchao PT2E front end: a ``Quantizer`` that annotates exported graphs with this project's TensorRT rules.

::

    ep = torch.export.export(model, (x,), dynamic_shapes=...)       # aten graph
    prepared = prepare_pt2e(ep.module(), TensorRTQuantizer(cfg))     # BN folded by torchao, then annotate():
        place_qdq(...)  the placement of fx2trt_pipeline.quantize (rules of op_rules.py, skip / overrides)
        -> input edges of quantized layers: per-tensor int8 [-128, 127], zero point 0, our calibrators
        -> weights: per-channel int8 [-127, 127] on axis 0 (ConvTranspose: QuantConfig.deconv_weight_axis)
    calibrate(prepared)                                                 # TensorStats observers
    qgm = convert_pt2e(prepared)                                        # quantized_decomposed Q/DQ + aten ops

The converted graph goes through the converters (``converters/aten.py``, ``converters/qdq.py``) like a
graph from :func:`fx2trt_pipeline.quantize`, and gives the same TensorRT network: the same Q/DQ layers,
scales from the same statistics and calibrators (docs/benchmarks.md, tests/frontends/test_pt2e.py).

torchao is an optional dependency (``pip install fx2trt-pipeline[pt2e]``); ``import fx2trt_pipeline``
never imports this module.

Example:
    >>> import torch
    >>> from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    >>> from fx2trt_pipeline.pt2e import TensorRTQuantizer
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), TensorRTQuantizer())
    >>> _ = prepared(x)
    >>> qgm = convert_pt2e(prepared)
    >>> sorted({str(n.target).split(".")[1] for n in qgm.graph.nodes if "quantized_decomposed" in str(n.target)})
    ['dequantize_per_channel', 'dequantize_per_tensor', 'quantize_per_tensor']
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

try:
    from torchao.quantization.pt2e.observer import ObserverBase
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        QuantizationSpec,
        Quantizer,
        SharedQuantizationSpec,
    )
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    from fx2trt_pipeline.errors import ConfigError

    raise ConfigError(
        "fx2trt_pipeline.pt2e needs torchao: pip install 'fx2trt-pipeline[pt2e]' (torchao==0.18.0)"
    ) from exc

from fx2trt_pipeline.quantize.calibrators import compute_amax
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.quantize.op_rules import MODULE_RULES
from fx2trt_pipeline.quantize.placement import Placement, place_qdq
from fx2trt_pipeline.quantize.qdq_ops import QMAX, QMIN, WEIGHT_QMAX
from fx2trt_pipeline.quantize.reference import activation_scale, quantize_weight
from fx2trt_pipeline.quantize.statistics import TensorStats

_MODULE_TYPES = {cls.__name__ for cls in MODULE_RULES}


class TensorStatsObserver(ObserverBase):
    """Activation observer: feeds this project's mergeable :class:`TensorStats`; the scale comes from
    the same calibrator functions as :func:`fx2trt_pipeline.quantize` (symmetric int8, zero point 0)."""

    def __init__(self, calibrator: str = "mse", percentile: float = 99.99, name: str = "", **_: Any) -> None:
        super().__init__(dtype=torch.int8)
        self.qscheme, self.quant_min, self.quant_max = torch.per_tensor_symmetric, QMIN, QMAX
        self.calibrator, self.percentile, self.observed_name = calibrator, percentile, name
        self.stats = TensorStats()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.stats.update(x.detach(), self.observed_name)
        return x

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        amax = compute_amax(self.stats, self.calibrator, self.percentile)
        return activation_scale(amax).reshape(1), torch.zeros(1, dtype=torch.int32)


class WeightObserver(ObserverBase):
    """Weight observer: symmetric narrow-range int8, ``amax / 127`` per channel on ``ch_axis`` (or per tensor),
    the scales of :func:`fx2trt_pipeline.quantize.reference.quantize_weight`."""

    def __init__(self, ch_axis: int | None = 0, **_: Any) -> None:
        super().__init__(dtype=torch.int8)
        per_channel = ch_axis is not None
        self.qscheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
        self.ch_axis, self.quant_min, self.quant_max = ch_axis, -WEIGHT_QMAX, WEIGHT_QMAX
        self.scale: torch.Tensor | None = None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        self.scale = quantize_weight(w, self.ch_axis)[1]
        return w

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.scale.reshape(-1)
        return scale, torch.zeros(scale.numel(), dtype=torch.int32)


def module_naming(node: Node) -> tuple[str, str | None]:
    """What skip / override patterns see for an exported node: the module path and class of the
    conv / linear / pooling module the op implements (as :func:`fx2trt_pipeline.quantize` names it),
    else the node name."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
        if cls_name in _MODULE_TYPES:
            return str(path), cls_name
    return node.name, None


def _input_at(node: Node, path: tuple[int, ...]) -> Node:
    value = node.args[path[0]]
    return value[path[1]] if len(path) > 1 else value


def _annotate(node: Node, input_node: Node, spec: Any) -> None:
    annotation = node.meta.get("quantization_annotation") or QuantizationAnnotation()
    annotation.input_qspec_map[input_node] = spec
    annotation._annotated = True
    node.meta["quantization_annotation"] = annotation


class TensorRTQuantizer(Quantizer):
    """A torchao PT2E ``Quantizer`` with TensorRT's Q/DQ rules and this project's calibrators.

    Args:
        config: the same :class:`~fx2trt_pipeline.QuantConfig` as :func:`fx2trt_pipeline.quantize`
            (calibrator, percentile, quantize_ops, skip, overrides by name / module type,
            deconv_weight_axis, per_channel_weights); default ``QuantConfig()``.

    Skip and override patterns match module paths (``layer1.0.conv1``) for ops that implement a
    conv / linear / pooling module and node names for the others, as with ``ftp.quantize_model``.

    Example:
        >>> from fx2trt_pipeline.pt2e import TensorRTQuantizer
        >>> import fx2trt_pipeline as ftp
        >>> TensorRTQuantizer(ftp.QuantConfig(calibrator="minmax")).config.calibrator
        'minmax'
    """

    def __init__(self, config: QuantConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else QuantConfig()
        self.placement: Placement | None = None

    def annotate(self, model: GraphModule) -> GraphModule:
        """Annotate activation input edges and weights of every quantized layer (in place)."""
        placement = place_qdq(model, self.config, naming=module_naming)
        nodes = {n.name: n for n in model.graph.nodes}
        for key, group in placement.groups.items():
            edges = [(nodes[t], nodes[c], path) for t in group.members for c, path in placement.points[t].uses]
            ctor = TensorStatsObserver.with_args(calibrator=group.calibrator, percentile=group.percentile, name=key)
            first = (_input_at(edges[0][1], edges[0][2]), edges[0][1])
            spec = QuantizationSpec(
                dtype=torch.int8,
                quant_min=QMIN,
                quant_max=QMAX,
                qscheme=torch.per_tensor_symmetric,
                observer_or_fake_quant_ctr=ctor,
            )
            for i, (_, consumer, path) in enumerate(edges):
                # One observer per scale group, as in ftp.quantize_model (concat / maxpool inputs share it).
                _annotate(consumer, _input_at(consumer, path), spec if i == 0 else SharedQuantizationSpec(first))
        for wp in placement.weights.values():
            layer = nodes[wp.layer]
            qscheme = torch.per_tensor_symmetric if wp.axis is None else torch.per_channel_symmetric
            spec = QuantizationSpec(
                dtype=torch.int8,
                quant_min=-WEIGHT_QMAX,
                quant_max=WEIGHT_QMAX,
                qscheme=qscheme,
                ch_axis=wp.axis,
                observer_or_fake_quant_ctr=WeightObserver.with_args(ch_axis=wp.axis),
            )
            _annotate(layer, layer.args[1], spec)
        self.placement = placement
        return model

    def validate(self, model: GraphModule) -> None:
        """Nothing to check beyond what annotate() enforces."""


__all__ = ["TensorRTQuantizer", "TensorStatsObserver", "WeightObserver", "module_naming"]
