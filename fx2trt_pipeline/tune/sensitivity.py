"""Layer sensitivity: which quantized layers cost the most accuracy, cheapest measures first.

Proxies (no labels): a layer's own quantization SQNR (:func:`layer_sqnr_proxy`, from
``validate.quant_error``; one pass) and the network-output noise removed by keeping that layer alone in
float (:func:`output_gain_proxy`; one pass per layer), which ranks by default because the own SQNR ignores
what happens downstream (how the two proxies compare is measured in docs/benchmarks.md).
:func:`layer_sensitivity` ranks every quantized layer; :mod:`.mixed_precision` measures the top few and
searches the float set. :func:`convert_with_skip` / :func:`quantize_with_skip` build a model with some layers
in float from one calibration where the Q/DQ placement allows it.

Example:
    >>> ranked = layer_sensitivity(model, prepared, (x,))          # doctest: +SKIP
    >>> [s.layer for s in ranked][:3]                              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.capture import flatten_outputs
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.api import calibrate, convert, prepare, prepared_info
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.quantize.observe import StatsObserver
from fx2trt_pipeline.quantize.op_rules import rule_for_node
from fx2trt_pipeline.validate.compare import sqnr_db
from fx2trt_pipeline.validate.quant_error import quant_error_table


def quantized_layers(prepared: GraphModule) -> list[str]:
    """Node names of the layers with quantized inputs or weights, in graph order (what can go float).

    Transparent ops (max-pool, concat) are not listed: they have no Q/DQ of their own.

    Example:
        >>> quantized_layers(prepared)[:2]          # doctest: +SKIP
        ['backbone_0', 'backbone_4_0_conv1']
    """
    placement = prepared_info(prepared, calibrated=True).placement
    modules = dict(prepared.named_modules())
    nodes = {n.name: n for n in prepared.graph.nodes}
    names = set(placement.weights) | {consumer for p in placement.points.values() for consumer, _ in p.uses}
    layers = [n for n in names if not _transparent(nodes[n], modules)]
    order = {n.name: i for i, n in enumerate(prepared.graph.nodes)}
    return sorted(layers, key=order.__getitem__)


def _transparent(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    rule = rule_for_node(node, modules)
    return rule is not None and rule.transparent


def convert_with_skip(
    prepared: GraphModule, skip: Sequence[str], config: QuantConfig | None = None
) -> GraphModule | None:
    """The quantized model with ``skip`` layers in float, from the statistics already collected.

    Returns ``None`` when skipping moves Q/DQ onto tensors that were never observed (their scale
    groups differ from the calibrated ones): then re-prepare with the skip config and calibrate.

    Example:
        >>> qgm = convert_with_skip(prepared, ["deconv_6"])    # doctest: +SKIP
    """
    base = config or prepared_info(prepared, calibrated=True).config
    try:
        return convert(prepared, dataclasses.replace(base, skip=tuple(dict.fromkeys((*base.skip, *skip)))))
    except ConfigError:
        return None


def quantize_with_skip(
    model: nn.Module,
    prepared: GraphModule,
    skip: Sequence[str],
    config: QuantConfig,
    calib_batches: Sequence[Any] | None = None,
) -> GraphModule | None:
    """:func:`convert_with_skip`, else (new Q/DQ points) re-prepare and calibrate on ``calib_batches``.

    Returns ``None`` only when re-calibration is needed and no ``calib_batches`` were given.
    """
    qgm = convert_with_skip(prepared, skip, config)
    if qgm is not None or calib_batches is None:
        return qgm
    cfg = dataclasses.replace(config, skip=tuple(dict.fromkeys((*config.skip, *skip))))
    first = next(iter(calib_batches))
    fresh = prepare(model, tuple(first) if isinstance(first, (tuple, list)) else (first,), cfg)
    calibrate(fresh, calib_batches, show_progress=False)
    return convert(fresh)


def layer_sqnr_proxy(
    model: nn.Module, qgm: GraphModule, prepared: GraphModule, inputs: Sequence[torch.Tensor]
) -> dict[str, float]:
    """Each quantized layer's own quantization SQNR (dB; lower = noisier), from one forward pass.

    The layer alone on float inputs through its own Q/DQ and INT8 weights vs the FP32 layer
    (:func:`~fx2trt_pipeline.validate.quant_error.quant_error_table`); the Q/DQ in front of a
    transparent op (max-pool) is charged to the quantized layer that op feeds.

    Example:
        >>> proxy = layer_sqnr_proxy(model, qgm, prepared, (x,))   # doctest: +SKIP
        >>> min(proxy, key=proxy.get)                               # doctest: +SKIP
    """
    layers = quantized_layers(prepared)
    table = {row.layer: row.activation_sqnr_db for row in quant_error_table(model, qgm, tuple(inputs))}
    modules = dict(prepared.named_modules())
    nodes = {n.name: n for n in prepared.graph.nodes}
    proxy = {layer: table.get(layer, math.inf) for layer in layers}
    for name, sqnr in table.items():
        if name in nodes and _transparent(nodes[name], modules):
            for layer in _fed_layers(nodes[name], set(layers), modules):
                proxy[layer] = min(proxy[layer], sqnr)
    return proxy


def _fed_layers(node: torch.fx.Node, layers: set[str], modules: dict[str, nn.Module]) -> list[str]:
    """Quantized layers reached from ``node`` through transparent ops and observers."""
    found, stack = [], list(node.users)
    while stack:
        user = stack.pop()
        if user.name in layers:
            found.append(user.name)
        elif _transparent(user, modules) or isinstance(modules.get(str(user.target)), StatsObserver):
            stack.extend(user.users)
    return found


def _relative_noise(reference: Sequence[torch.Tensor], module: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Sum over outputs of ``|ref - out|^2 / |ref|^2``, so every output weighs the same whatever its scale."""
    with torch.no_grad():
        outputs = flatten_outputs(module(*inputs))
    return sum(10.0 ** (-sqnr_db(r, o) / 10.0) for r, o in zip(reference, outputs))


def output_gain_proxy(
    model: nn.Module,
    prepared: GraphModule,
    inputs: Sequence[torch.Tensor],
    config: QuantConfig,
    calib_batches: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Network-output noise removed by keeping each layer alone in float, in dB (higher = more sensitive).

    Leave-one-out at the outputs: ``10 log10(noise(full INT8) / noise(INT8 with this layer float))``,
    noise summed over outputs relative to their power, on one batch. One convert (from the collected
    statistics) and one forward pass per layer; a layer whose float version moves a Q/DQ point is
    re-calibrated on ``calib_batches`` (NaN without them).

    Example:
        >>> gains = output_gain_proxy(model, prepared, (x,), QuantConfig(calibrator="mse"))   # doctest: +SKIP
        >>> max(gains, key=gains.get)                                                        # doctest: +SKIP
    """
    with torch.no_grad():
        reference = flatten_outputs(model(*inputs))
    base = convert(prepared, config)  # raises when the config needs statistics that were not collected
    full = _relative_noise(reference, base, inputs)
    gains = {}
    for layer in quantized_layers(prepared):
        qgm = quantize_with_skip(model, prepared, [layer], config, calib_batches)
        noise = math.nan if qgm is None else _relative_noise(reference, qgm, inputs)
        gains[layer] = 10.0 * math.log10(full / max(noise, 1e-30)) if not math.isnan(noise) else math.nan
    return gains


PROXIES = ("output", "layer")


@dataclass
class LayerSensitivity:
    """Sensitivity of one quantized layer.

    Attributes:
        layer: node name (the name ``QuantConfig.skip`` takes).
        sqnr_db: the layer's own quantization SQNR (:func:`layer_sqnr_proxy`; lower = noisier).
        output_gain_db: output noise removed by floating it alone (:func:`output_gain_proxy`); NaN if
            not computed.
        proxy_rank: rank by the search's proxy, 0 = most sensitive.
        metric_if_float: the metric with only this layer in float (``None``: not measured).
        recovered: ``metric_if_float - metric(full INT8)``; ``None``: not measured.
    """

    layer: str
    sqnr_db: float
    output_gain_db: float
    proxy_rank: int = 0
    metric_if_float: float | None = None
    recovered: float | None = None


def layer_sensitivity(
    model: nn.Module,
    prepared: GraphModule,
    inputs: Sequence[torch.Tensor],
    *,
    config: QuantConfig | None = None,
    calib_batches: Sequence[Any] | None = None,
    proxy: str = "output",
) -> list[LayerSensitivity]:
    """Every quantized layer with both proxies, most sensitive first by ``proxy``.

    Args:
        model, prepared, inputs: the float model, its calibrated prepared module, one input batch.
        config: calibrator settings (default: the prepared config).
        calib_batches: for layers whose float version needs re-calibration (output proxy).
        proxy: ``"output"`` (:func:`output_gain_proxy`) or ``"layer"`` (:func:`layer_sqnr_proxy` only).

    Example:
        >>> [s.layer for s in layer_sensitivity(model, prepared, (x,))][:3]   # doctest: +SKIP
    """
    if proxy not in PROXIES:
        raise ConfigError(f"Unknown sensitivity proxy {proxy!r}; choose from {PROXIES}.")
    config = config or prepared_info(prepared, calibrated=True).config
    base = convert(prepared, config)  # raises when the config needs statistics that were not collected
    sqnr = layer_sqnr_proxy(model, base, prepared, inputs)
    gain = (
        output_gain_proxy(model, prepared, inputs, config, calib_batches)
        if proxy == "output"
        else {layer: math.nan for layer in sqnr}
    )
    # NaN gains (not computable) rank last; the own-SQNR ranking breaks ties.
    key = (
        (lambda n: (-gain[n] if not math.isnan(gain[n]) else math.inf, sqnr[n]))
        if proxy == "output"
        else (lambda n: sqnr[n])
    )
    ranked = sorted(sqnr, key=key)
    return [LayerSensitivity(n, sqnr[n], gain[n], rank) for rank, n in enumerate(ranked)]
