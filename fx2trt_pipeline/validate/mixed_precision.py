"""Layer sensitivity and automatic mixed precision: keep the fewest layers in float to meet a budget.

Sensitivity is measured two ways, cheap first:

* **proxy** (one forward pass): each quantized layer's own quantization error, the SQNR of the
  layer run alone on float inputs through its own Q/DQ and INT8 weights vs the FP32 layer
  (:func:`~fx2trt_pipeline.validate.layer_report.quant_error_table`). A transparent op (max-pool)
  carries the Q/DQ of the layer it feeds, so its error is charged to that layer.
* **metric** (one evaluation per layer, only for the worst few by proxy): *leave-one-out*, i.e.
  everything quantized except that layer (``QuantConfig.skip``). We chose leave-one-out over
  "only that layer quantized" because it measures exactly what the search decides: how much of the
  INT8 loss keeping this layer in float gives back, starting from the full INT8 model, with the
  interactions of all other quantized layers present.

The search then adds layers to the float set greedily (largest measured recovery first, then the
rest in proxy order), keeps a layer only if it raises the metric, and stops as soon as the drop vs
FP32 is within budget. Float layers get no Q/DQ at all. Scales come from the one calibration pass
whenever the remaining Q/DQ placement is a subset of the calibrated one; a skip that creates a new
Q/DQ point (e.g. a residual add whose conv input is now float) re-prepares and re-calibrates.

Example:
    >>> from fx2trt_pipeline.validate.accuracy import demo_setup, detection_evaluator
    >>> setup = demo_setup()                                                              # doctest: +SKIP
    >>> result = mixed_precision_search(setup.model, setup.prepared, detection_evaluator(setup.val),
    ...                                 budget=0.003, calib_batches=setup.calib_batches)  # doctest: +SKIP
    >>> print(result); result.float_layers                                                # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.api import PREPARED_ATTR, PreparedInfo, calibrate, convert, prepare
from fx2trt_pipeline.quantize.calibrators import compute_amax
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.quantize.observe import remove_observers
from fx2trt_pipeline.quantize.op_rules import rule_for_node
from fx2trt_pipeline.quantize.placement import place_qdq
from fx2trt_pipeline.quantize.reference import build_reference
from fx2trt_pipeline.quantize.state import STATE_ATTR, QuantState
from fx2trt_pipeline.validate.compare import format_table
from fx2trt_pipeline.validate.layer_report import quant_error_table

Evaluator = Callable[[Any], Mapping[str, float]]


def _info(prepared: GraphModule) -> PreparedInfo:
    info = getattr(prepared, PREPARED_ATTR, None)
    if info is None or info.batches_seen == 0:
        raise ConfigError("Expected a module from fx2trt_pipeline.prepare() calibrated with "
                          "fx2trt_pipeline.calibrate().")
    return info


def quantized_layers(prepared: GraphModule) -> list[str]:
    """Node names of the layers with quantized inputs or weights, in graph order (what can go float).

    Transparent ops (max-pool, concat) are not listed: they have no Q/DQ of their own.

    Example:
        >>> quantized_layers(prepared)[:2]          # doctest: +SKIP
        ['backbone_0', 'backbone_4_0_conv1']
    """
    placement = _info(prepared).placement
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
    info = _info(prepared)
    base = config or info.config
    cfg = dataclasses.replace(base, skip=tuple(dict.fromkeys((*base.skip, *skip))))
    plain = copy.deepcopy(prepared)
    if hasattr(plain, PREPARED_ATTR):
        delattr(plain, PREPARED_ATTR)
    remove_observers(plain)
    placement = place_qdq(plain, cfg)
    old = info.placement.groups
    if any(key not in old or old[key].members != group.members for key, group in placement.groups.items()):
        return None
    amax = {key: compute_amax(info.stats[key], g.calibrator, g.percentile) for key, g in placement.groups.items()}
    device = next((p.device for p in plain.parameters()), torch.device("cpu"))
    weight_scales = build_reference(plain, placement, amax)
    plain.to(device)
    setattr(plain, STATE_ATTR, QuantState(cfg, placement, amax, weight_scales,
                                          {k: copy.deepcopy(info.stats[k]) for k in placement.groups}))
    return plain


def proxy_sensitivity(model: nn.Module, qgm: GraphModule, prepared: GraphModule, inputs: Sequence[torch.Tensor]
                      ) -> dict[str, float]:
    """Proxy SQNR (dB, lower = more sensitive) of every quantized layer, from one forward pass.

    The SQNR of the layer alone (its own Q/DQ and INT8 weights on float inputs); the Q/DQ in front of
    a transparent op (max-pool) is charged to the quantized layer that op feeds.

    Example:
        >>> sorted(proxy_sensitivity(model, qgm, prepared, (x,)).items(), key=lambda kv: kv[1])[0]  # doctest: +SKIP
        ('backbone_4_0_conv1', 23.85)
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
        elif _transparent(user, modules) or (user.op == "call_module" and user.name.endswith("_observer")):
            stack.extend(user.users)
    return found


@dataclass
class LayerSensitivity:
    """Sensitivity of one quantized layer.

    Attributes:
        layer: node name (the name ``QuantConfig.skip`` takes).
        proxy_sqnr_db: the layer's own quantization SQNR; lower = noisier.
        proxy_rank: 0 for the lowest SQNR.
        metric_if_float: the metric with only this layer in float (``None``: not measured).
        recovered: ``metric_if_float - metric(full INT8)``; ``None``: not measured.
    """

    layer: str
    proxy_sqnr_db: float
    proxy_rank: int
    metric_if_float: float | None = None
    recovered: float | None = None


@dataclass
class SearchStep:
    """One tried float set and its metric; ``accepted`` when it raised the metric."""

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
        sensitivity: every quantized layer, by proxy rank, with measured values where measured.
        steps: every float set tried after the leave-one-out measurements.
        evaluations: how many times the metric was evaluated (FP32 and full INT8 included).
        note: why the search stopped.
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
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model)."""
        return {"metric": self.metric, "budget": self.budget, "fp32": self.fp32, "int8": self.int8,
                "final": self.final, "float_layers": self.float_layers, "met_budget": self.met_budget,
                "skip": list(self.config.skip), "evaluations": self.evaluations, "note": self.note,
                "sensitivity": [dataclasses.asdict(s) for s in self.sensitivity],
                "steps": [dataclasses.asdict(s) for s in self.steps]}

    def __str__(self) -> str:
        def pts(v: float | None, sign: str = "") -> str:
            return "-" if v is None else f"{100 * v:{sign}.2f}"

        by_layer = {s.layer: s for s in self.sensitivity}
        head = (f"mixed precision: {self.metric} drop budget {pts(self.budget)} points vs fp32 {pts(self.fp32)}\n"
                f"full INT8 {pts(self.int8)} (drop {pts(self.fp32 - self.int8)}) -> {len(self.float_layers)} "
                f"layer(s) in float: {pts(self.final)} (drop {pts(self.fp32 - self.final)}): "
                f"{'budget met' if self.met_budget else 'budget NOT met'}; {self.evaluations} evaluations\n")
        why = "".join(f"  float {n}: proxy SQNR {by_layer[n].proxy_sqnr_db:.2f} dB (rank {by_layer[n].proxy_rank}), "
                      f"alone in float recovers {pts(by_layer[n].recovered, '+')} points\n"
                      for n in self.float_layers if n in by_layer)
        rows = [(s.layer, str(s.proxy_rank), f"{s.proxy_sqnr_db:.2f}", pts(s.metric_if_float), pts(s.recovered, "+"),
                 "float" if s.layer in self.float_layers else "") for s in self.sensitivity]
        table = format_table(("layer", "proxy rank", "SQNR dB", f"{self.metric} if float", "recovered", ""), rows)
        return head + why + (f"  {self.note}\n" if self.note else "") + table


class _Search:
    """Evaluates float sets once each (cached), re-preparing only when the statistics do not fit."""

    def __init__(self, model: nn.Module, prepared: GraphModule, evaluate: Evaluator, metric: str,
                 config: QuantConfig, calib_batches: Sequence[Any] | None) -> None:
        self.model, self.prepared, self.evaluate, self.metric = model, prepared, evaluate, metric
        self.config, self.calib_batches = config, calib_batches
        self.cache: dict[frozenset[str], tuple[float, GraphModule | None]] = {}
        self.evaluations = 0

    def score(self, module: Any) -> float:
        self.evaluations += 1
        metrics = self.evaluate(module)
        if self.metric not in metrics:
            raise ConfigError(f"evaluate() returned {sorted(metrics)}, without the metric {self.metric!r}.")
        return float(metrics[self.metric])

    def build(self, skip: Sequence[str]) -> GraphModule | None:
        qgm = convert_with_skip(self.prepared, skip, self.config)
        if qgm is not None or self.calib_batches is None:
            return qgm
        cfg = dataclasses.replace(self.config, skip=tuple(dict.fromkeys((*self.config.skip, *skip))))
        first = next(iter(self.calib_batches))
        example = first if isinstance(first, (tuple, list)) else (first,)
        fresh = prepare(self.model, example, cfg)
        calibrate(fresh, self.calib_batches, show_progress=False)
        return convert(fresh)

    def metric_with(self, skip: Sequence[str]) -> tuple[float, GraphModule | None]:
        """Metric of the model with ``skip`` in float (NaN when it needs data that was not given)."""
        key = frozenset(skip)
        if key not in self.cache:
            qgm = self.build(list(skip))
            self.cache[key] = (math.nan if qgm is None else self.score(qgm), qgm)
        return self.cache[key]


def mixed_precision_search(model: nn.Module, prepared: GraphModule, evaluate: Evaluator, budget: float, *,
                           metric: str = "mAP", config: QuantConfig | None = None,
                           calib_batches: Sequence[Any] | None = None, proxy_inputs: Sequence[torch.Tensor] | None = None,
                           max_verify: int = 4, max_float_layers: int | None = None,
                           max_evaluations: int | None = None, fp32_metric: float | None = None
                           ) -> MixedPrecisionResult:
    """Keep the fewest layers in float so that ``metric(FP32) - metric(INT8) <= budget``.

    Args:
        model: the float model.
        prepared: ``ftp.prepare(model, ...)`` calibrated with ``ftp.calibrate`` (its statistics are reused).
        evaluate: ``evaluate(model) -> metrics`` (e.g. ``detection_evaluator(val)``); higher is better.
        budget: the allowed drop in metric units (0.003 = 0.3 mAP points).
        metric: the metric key of ``evaluate``'s result.
        config: calibrator settings (default: the prepared config; e.g. ``table.best.config(...)``).
        calib_batches: re-iterable calibration data, needed only when a skip moves a Q/DQ point and the
            statistics must be collected again; its first batch also feeds the proxy.
        proxy_inputs: one batch of positional inputs for the proxy (default: the first calib batch).
        max_verify: how many of the worst layers by proxy get a leave-one-out evaluation.
        max_float_layers: stop after this many float layers (default: no limit).
        max_evaluations: stop before evaluating the metric more often than this (default: no limit);
            the leave-one-out checks count.
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
        (True, ['deconv_6'])
    """
    info = _info(prepared)
    config = config or info.config
    search = _Search(model, prepared, evaluate, metric, config, calib_batches)
    fp32 = float(fp32_metric) if fp32_metric is not None else search.score(model)
    int8, base = search.metric_with(())
    if base is None:
        raise ConfigError("The prepared placement does not match the config; pass the config prepare() used, "
                          "varying only calibrators.")

    def done(final: float, layers: list[str], qgm: GraphModule, sens: list[LayerSensitivity],
             steps: list[SearchStep], note: str) -> MixedPrecisionResult:
        cfg = dataclasses.replace(config, skip=tuple(dict.fromkeys((*config.skip, *layers))))
        return MixedPrecisionResult(metric, budget, fp32, int8, final, layers, fp32 - final <= budget + 1e-12,
                                    cfg, qgm, sens, steps, search.evaluations, note)

    if proxy_inputs is None:
        if calib_batches is None:
            raise ConfigError("mixed_precision_search needs proxy_inputs or calib_batches for the proxy ranking.")
        first = next(iter(calib_batches))
        proxy_inputs = tuple(first) if isinstance(first, (tuple, list)) else (first,)
    proxy = proxy_sensitivity(model, base, prepared, proxy_inputs)
    ranked = sorted(proxy, key=lambda name: proxy[name])
    sens = [LayerSensitivity(name, proxy[name], rank) for rank, name in enumerate(ranked)]
    if fp32 - int8 <= budget + 1e-12:
        return done(int8, [], base, sens, [], "full INT8 already meets the budget")
    budget_left = (lambda: True) if max_evaluations is None else (lambda: search.evaluations < max_evaluations)
    for s in sens[:max_verify]:  # leave-one-out on the proxy's worst few
        if not budget_left():
            break
        value, _ = search.metric_with((s.layer,))
        if not math.isnan(value):
            s.metric_if_float, s.recovered = value, value - int8
    measured = sorted((s for s in sens if s.recovered is not None and s.recovered > 0), key=lambda s: -s.recovered)
    order = [s.layer for s in measured] + [s.layer for s in sens if s.recovered is None] + \
            [s.layer for s in sens if s.recovered is not None and s.recovered <= 0]
    chosen: list[str] = []
    current, current_model, steps = int8, base, []
    limit = max_float_layers if max_float_layers is not None else len(order)
    for layer in order:
        if len(chosen) >= limit:
            return done(current, chosen, current_model, sens, steps, f"stopped at max_float_layers={limit}")
        if frozenset((*chosen, layer)) not in search.cache and not budget_left():
            return done(current, chosen, current_model, sens, steps,
                        f"stopped at max_evaluations={max_evaluations}")
        value, qgm = search.metric_with((*chosen, layer))
        if math.isnan(value):
            steps.append(SearchStep((*chosen, layer), value, False))
            continue
        accepted = value > current
        steps.append(SearchStep((*chosen, layer), value, accepted))
        if accepted and qgm is not None:
            chosen, current, current_model = [*chosen, layer], value, qgm
            if fp32 - current <= budget + 1e-12:
                return done(current, chosen, current_model, sens, steps, "")
    untried = [s for s in steps if math.isnan(s.metric)]
    note = "every layer was tried" + (f"; {len(untried)} needed re-calibration: pass calib_batches"
                                      if untried else "")
    return done(current, chosen, current_model, sens, steps, note)
