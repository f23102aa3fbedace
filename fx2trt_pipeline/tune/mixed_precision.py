"""Layer sensitivity and automatic mixed precision: keep the fewest layers in float to meet a budget.

Sensitivity, cheapest first. Proxies (no labels): a layer's own quantization SQNR
(:func:`layer_sqnr_proxy`, from ``layer_report``; one pass) and the network-output noise removed by
keeping that layer alone in float (:func:`output_gain_proxy`; one pass per layer), which ranks by
default because the own SQNR ignores what happens downstream (how the two proxies compare is measured in
docs/benchmarks.md). Metric: *leave-one-out* (everything
quantized but that layer, via ``QuantConfig.skip``) for the proxy's top few. Leave-one-out rather
than "only that layer quantized" because it measures what the search decides: how much of the INT8
loss floating this layer gives back, with every other quantized layer's error present.

The search adds layers to the float set greedily (largest measured recovery first, then proxy order),
keeps a layer only if the metric rises, stops once the drop vs FP32 is within budget, then drops the
float layers the budget no longer needs (greedy picks interact). Float layers
get no Q/DQ. Scales come from the one calibration pass while the remaining Q/DQ placement is a subset
of the calibrated one; a skip that creates a Q/DQ point (a residual add whose conv input turns float)
re-prepares and re-calibrates.

Example:
    >>> from fx2trt_pipeline.validate.accuracy import detection_evaluator
    >>> from fx2trt_pipeline.validate.demo_detector import demo_setup
    >>> setup = demo_setup()                                                              # doctest: +SKIP
    >>> result = mixed_precision_search(setup.model, setup.prepared, detection_evaluator(setup.val),
    ...                                 budget=0.003, calib_batches=setup.calib_batches)  # doctest: +SKIP
    >>> print(result); result.float_layers                                                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.api import calibrate, convert, prepare, prepared_info
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.quantize.observe import StatsObserver
from fx2trt_pipeline.quantize.op_rules import rule_for_node
from fx2trt_pipeline.validate.compare import format_table, sqnr_db
from fx2trt_pipeline.validate.layer_report import quant_error_table
from fx2trt_pipeline.capture import flatten_outputs

Evaluator = Callable[[Any], Mapping[str, float]]



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


def convert_with_skip(prepared: GraphModule, skip: Sequence[str], config: QuantConfig | None = None
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


def quantize_with_skip(model: nn.Module, prepared: GraphModule, skip: Sequence[str], config: QuantConfig,
                       calib_batches: Sequence[Any] | None = None) -> GraphModule | None:
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


def layer_sqnr_proxy(model: nn.Module, qgm: GraphModule, prepared: GraphModule,
                     inputs: Sequence[torch.Tensor]) -> dict[str, float]:
    """Each quantized layer's own quantization SQNR (dB; lower = noisier), from one forward pass.

    The layer alone on float inputs through its own Q/DQ and INT8 weights vs the FP32 layer
    (:func:`~fx2trt_pipeline.validate.layer_report.quant_error_table`); the Q/DQ in front of a
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


def _relative_noise(reference: Sequence[torch.Tensor], module: nn.Module,
                    inputs: Sequence[torch.Tensor]) -> float:
    """Sum over outputs of ``|ref - out|^2 / |ref|^2``, so every output weighs the same whatever its scale."""
    with torch.no_grad():
        outputs = flatten_outputs(module(*inputs))
    return sum(10.0 ** (-sqnr_db(r, o) / 10.0) for r, o in zip(reference, outputs))


def output_gain_proxy(model: nn.Module, prepared: GraphModule, inputs: Sequence[torch.Tensor],
                      config: QuantConfig, calib_batches: Sequence[Any] | None = None) -> dict[str, float]:
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


@dataclass
class SearchStep:
    """One tried float set and its metric; ``accepted`` when the search adopted it."""

    float_layers: tuple[str, ...]
    metric: float
    accepted: bool


@dataclass
class MixedPrecisionResult:
    """Outcome of :func:`mixed_precision_search`.

    Attributes:
        metric, budget: the metric and the allowed drop vs FP32.
        fp32, int8, final: the metric of the float model, the full INT8 model and the chosen one.
        float_layers: layers kept in float, in the order they were added.
        met_budget: ``fp32 - final <= budget``.
        config: the QuantConfig reproducing the chosen model (``skip`` lists the float layers).
        model: the chosen quantized GraphModule.
        sensitivity: every quantized layer by proxy rank, with the metric where it was measured.
        steps: every float set tried after the leave-one-out measurements (``accepted``: adopted).
        evaluations: how many times the metric was evaluated (FP32 and full INT8 included).
        proxy: the proxy that ranked the layers.
        note: why the search stopped when that was not the budget.
    """

    metric: str
    budget: float
    fp32: float
    int8: float
    final: float
    float_layers: list[str]
    met_budget: bool
    config: QuantConfig
    model: GraphModule = field(repr=False)
    sensitivity: list[LayerSensitivity] = field(default_factory=list)
    steps: list[SearchStep] = field(default_factory=list)
    evaluations: int = 0
    proxy: str = "output"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model)."""
        return {"metric": self.metric, "budget": self.budget, "fp32": self.fp32, "int8": self.int8,
                "final": self.final, "float_layers": self.float_layers, "met_budget": self.met_budget,
                "skip": list(self.config.skip), "evaluations": self.evaluations, "proxy": self.proxy,
                "note": self.note, "sensitivity": [dataclasses.asdict(s) for s in self.sensitivity],
                "steps": [dataclasses.asdict(s) for s in self.steps]}

    def __str__(self) -> str:
        def pts(v: float | None, sign: str = "") -> str:
            return "-" if v is None else f"{100 * v:{sign}.2f}"

        by_layer = {s.layer: s for s in self.sensitivity}
        head = (f"mixed precision: {self.metric} drop budget {pts(self.budget)} points vs fp32 "
                f"{pts(self.fp32)}\nfull INT8 {pts(self.int8)} (drop {pts(self.fp32 - self.int8)}) -> "
                f"{len(self.float_layers)} layer(s) in float: {pts(self.final)} (drop "
                f"{pts(self.fp32 - self.final)}): {'budget met' if self.met_budget else 'budget NOT met'}; "
                f"{self.evaluations} evaluations; layers ranked by the {self.proxy} proxy\n")
        why = "".join(f"  float {n}: output gain {b.output_gain_db:.2f} dB, own SQNR {b.sqnr_db:.2f} dB "
                      f"(rank {b.proxy_rank}), alone in float recovers {pts(b.recovered, '+')} points\n"
                      for n in self.float_layers for b in [by_layer.get(n)] if b is not None)
        rows = [(s.layer, str(s.proxy_rank), f"{s.output_gain_db:.3f}", f"{s.sqnr_db:.2f}",
                 pts(s.metric_if_float), pts(s.recovered, "+"), "float" * (s.layer in self.float_layers))
                for s in self.sensitivity]
        header = ("layer", "rank", "output gain dB", "own SQNR dB", f"{self.metric} if float", "recovered",
                  "")
        return head + why + (f"  {self.note}\n" if self.note else "") + format_table(header, rows)


def layer_sensitivity(model: nn.Module, prepared: GraphModule, inputs: Sequence[torch.Tensor], *,
                      config: QuantConfig | None = None, calib_batches: Sequence[Any] | None = None,
                      proxy: str = "output") -> list[LayerSensitivity]:
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
    gain = output_gain_proxy(model, prepared, inputs, config, calib_batches) if proxy == "output" else \
        {layer: math.nan for layer in sqnr}
    # NaN gains (not computable) rank last; the own-SQNR ranking breaks ties.
    key = (lambda n: (-gain[n] if not math.isnan(gain[n]) else math.inf, sqnr[n])) if proxy == "output" \
        else (lambda n: sqnr[n])
    ranked = sorted(sqnr, key=key)
    return [LayerSensitivity(n, sqnr[n], gain[n], rank) for rank, n in enumerate(ranked)]


def mixed_precision_search(model: nn.Module, prepared: GraphModule, evaluate: Evaluator, budget: float, *,
                           metric: str = "mAP", config: QuantConfig | None = None,
                           calib_batches: Sequence[Any] | None = None,
                           proxy_inputs: Sequence[torch.Tensor] | None = None, proxy: str = "output",
                           max_verify: int = 4, max_float_layers: int | None = None,
                           max_evaluations: int | None = None, prune: bool = True,
                           fp32_metric: float | None = None) -> MixedPrecisionResult:
    """Keep the fewest layers in float so that ``metric(FP32) - metric(INT8) <= budget``.

    Args:
        model: the float model.
        prepared: ``ftp.prepare(model, ...)`` calibrated with ``ftp.calibrate`` (its statistics are reused).
        evaluate: ``evaluate(model) -> metrics`` (e.g. ``detection_evaluator(val)``); higher is better.
        budget: the allowed drop in metric units (0.003 = 0.3 mAP points).
        metric: the metric key of ``evaluate``'s result.
        config: calibrator settings (default: the prepared config; e.g. ``table.best.config(...)``).
        calib_batches: re-iterable calibration data, needed when a skip moves a Q/DQ point and the
            statistics must be collected again; its first batch also feeds the proxies.
        proxy_inputs: one batch of positional inputs for the proxies (default: the first calib batch).
        proxy: ``"output"`` or ``"layer"`` (see :func:`layer_sensitivity`).
        max_verify: how many of the most sensitive layers by proxy get a leave-one-out evaluation.
        max_float_layers: stop after this many float layers (default: no limit).
        max_evaluations: never evaluate the metric more often than this (default: no limit).
        prune: once the budget is met, try dropping each float layer but the last added (one
            evaluation each) and keep the drops that still meet the budget.
        fp32_metric: the float model's metric if already known (saves one evaluation).

    Returns:
        A :class:`MixedPrecisionResult`; ``met_budget`` is False (and ``note`` says why) when the
        budget could not be met within the limits.

    Raises:
        ConfigError: ``prepared`` is not calibrated, no proxy inputs, or ``metric`` is missing.

    Example:
        >>> result = mixed_precision_search(model, prepared, detection_evaluator(val), budget=0.003,
        ...                                 calib_batches=batches)                 # doctest: +SKIP
        >>> result.met_budget, result.float_layers                                 # doctest: +SKIP
        (True, ['wh_2'])
    """
    config = config or prepared_info(prepared, calibrated=True).config
    cache: dict[frozenset[str], float] = {}  # metrics only: models are rebuilt, large ones would pile up
    evaluations = 0

    def score(module: Any) -> float:
        nonlocal evaluations
        evaluations += 1
        metrics = evaluate(module)
        if metric not in metrics:
            raise ConfigError(f"evaluate() returned {sorted(metrics)}, without the metric {metric!r}.")
        return float(metrics[metric])

    def metric_with(skip: Sequence[str]) -> float:
        """Metric with ``skip`` in float, each set evaluated once (NaN: needs calib_batches)."""
        if frozenset(skip) not in cache:
            qgm = quantize_with_skip(model, prepared, list(skip), config, calib_batches)
            cache[frozenset(skip)] = math.nan if qgm is None else score(qgm)
        return cache[frozenset(skip)]

    convert(prepared, config)  # fail early when the config needs statistics that were not collected
    fp32 = float(fp32_metric) if fp32_metric is not None else score(model)
    int8 = metric_with(())

    def done(final: float, layers: list[str], sens: list[LayerSensitivity], steps: list[SearchStep],
             note: str) -> MixedPrecisionResult:
        cfg = dataclasses.replace(config, skip=tuple(dict.fromkeys((*config.skip, *layers))))
        # never None: the chosen set was built (and evaluated) before
        qgm = quantize_with_skip(model, prepared, layers, config, calib_batches)
        return MixedPrecisionResult(metric, budget, fp32, int8, final, layers, fp32 - final <= budget + 1e-12,
                                    cfg, qgm, sens, steps, evaluations, proxy, note)  # type: ignore[arg-type]

    def budget_left() -> bool:
        return max_evaluations is None or evaluations < max_evaluations

    if fp32 - int8 <= budget + 1e-12:  # nothing to recover: skip the proxies too
        return done(int8, [], [], [], "full INT8 already meets the budget")
    if proxy_inputs is None:
        if calib_batches is None:
            raise ConfigError("mixed_precision_search needs proxy_inputs or calib_batches for the proxies.")
        first = next(iter(calib_batches))
        proxy_inputs = tuple(first) if isinstance(first, (tuple, list)) else (first,)
    sens = layer_sensitivity(model, prepared, proxy_inputs, config=config, calib_batches=calib_batches,
                             proxy=proxy)
    for s in sens[:max_verify]:  # leave-one-out with the real metric on the proxy's top few
        if not budget_left():
            break
        value = metric_with((s.layer,))
        if not math.isnan(value):
            s.metric_if_float, s.recovered = value, value - int8
    measured = sorted((s for s in sens if s.recovered is not None and s.recovered > 0),
                      key=lambda s: -(s.recovered or 0.0))
    order = [s.layer for s in measured] + [s.layer for s in sens if s.recovered is None] + \
        [s.layer for s in sens if s.recovered is not None and s.recovered <= 0]
    chosen: list[str] = []
    current, steps = int8, []
    limit = max_float_layers if max_float_layers is not None else len(order)
    for layer in order:
        if len(chosen) >= limit:
            return done(current, chosen, sens, steps, f"stopped at max_float_layers={limit}")
        if frozenset((*chosen, layer)) not in cache and not budget_left():
            return done(current, chosen, sens, steps, f"stopped at max_evaluations={max_evaluations}")
        value = metric_with((*chosen, layer))
        accepted = not math.isnan(value) and value > current
        steps.append(SearchStep((*chosen, layer), value, accepted))
        if accepted:
            chosen, current = [*chosen, layer], value
            if fp32 - current <= budget + 1e-12:
                break
    else:
        untried = sum(math.isnan(s.metric) for s in steps)
        needs = f"; {untried} needed calib_batches to re-calibrate" if untried else ""
        return done(current, chosen, sens, steps, "every layer was tried" + needs)
    # Greedy additions interact: a layer that helped early may be redundant now. Drop any whose removal
    # still meets the budget (latest first: the ordering put the least promising last).
    for layer in reversed(chosen[:-1] if prune else []):
        rest = [n for n in chosen if n != layer]
        if frozenset(rest) not in cache and not budget_left():
            break
        value = metric_with(rest)
        kept_out = not math.isnan(value) and fp32 - value <= budget + 1e-12
        steps.append(SearchStep(tuple(rest), value, kept_out))
        if kept_out:
            chosen, current = rest, value
    return done(current, chosen, sens, steps, "")
