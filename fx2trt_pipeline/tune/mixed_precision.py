"""Automatic mixed precision: keep the fewest layers in float to meet an accuracy budget.

Layers are ranked by a cheap proxy (:mod:`.sensitivity`: the output noise removed by floating each layer
alone, or its own quantization SQNR). Metric: *leave-one-out* (everything
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
    >>> from fx2trt_pipeline.models.centernet import centernet_decode as decode
    >>> from fx2trt_pipeline.validate.demo_detector import demo_setup
    >>> setup = demo_setup()                                                              # doctest: +SKIP
    >>> result = mixed_precision_search(setup.model, setup.prepared, detection_evaluator(setup.val, decode),
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

from fx2trt_pipeline.errors import ConfigError, InternalError
from fx2trt_pipeline.quantize.api import convert, prepared_info
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.tune.sensitivity import (
    LayerSensitivity,
    layer_sensitivity,
    quantize_with_skip,
)
from fx2trt_pipeline.validate.compare import format_table

Evaluator = Callable[[Any], Mapping[str, float]]


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
        return {
            "metric": self.metric,
            "budget": self.budget,
            "fp32": self.fp32,
            "int8": self.int8,
            "final": self.final,
            "float_layers": self.float_layers,
            "met_budget": self.met_budget,
            "skip": list(self.config.skip),
            "evaluations": self.evaluations,
            "proxy": self.proxy,
            "note": self.note,
            "sensitivity": [dataclasses.asdict(s) for s in self.sensitivity],
            "steps": [dataclasses.asdict(s) for s in self.steps],
        }

    def __str__(self) -> str:
        def pts(v: float | None, sign: str = "") -> str:
            return "-" if v is None else f"{100 * v:{sign}.2f}"

        by_layer = {s.layer: s for s in self.sensitivity}
        head = (
            f"mixed precision: {self.metric} drop budget {pts(self.budget)} points vs fp32 "
            f"{pts(self.fp32)}\nfull INT8 {pts(self.int8)} (drop {pts(self.fp32 - self.int8)}) -> "
            f"{len(self.float_layers)} layer(s) in float: {pts(self.final)} (drop "
            f"{pts(self.fp32 - self.final)}): {'budget met' if self.met_budget else 'budget NOT met'}; "
            f"{self.evaluations} evaluations; layers ranked by the {self.proxy} proxy\n"
        )
        why = "".join(
            f"  float {n}: output gain {b.output_gain_db:.2f} dB, own SQNR {b.sqnr_db:.2f} dB "
            f"(rank {b.proxy_rank}), alone in float recovers {pts(b.recovered, '+')} points\n"
            for n in self.float_layers
            for b in [by_layer.get(n)]
            if b is not None
        )
        rows = [
            (
                s.layer,
                str(s.proxy_rank),
                f"{s.output_gain_db:.3f}",
                f"{s.sqnr_db:.2f}",
                pts(s.metric_if_float),
                pts(s.recovered, "+"),
                "float" * (s.layer in self.float_layers),
            )
            for s in self.sensitivity
        ]
        header = ("layer", "rank", "output gain dB", "own SQNR dB", f"{self.metric} if float", "recovered", "")
        return head + why + (f"  {self.note}\n" if self.note else "") + format_table(header, rows)


@dataclass(frozen=True)
class SearchOptions:
    """Settings of :func:`mixed_precision_search` (its keyword arguments).

    Attributes:
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
    """

    metric: str = "mAP"
    config: QuantConfig | None = None
    calib_batches: Sequence[Any] | None = None
    proxy_inputs: Sequence[torch.Tensor] | None = None
    proxy: str = "output"
    max_verify: int = 4
    max_float_layers: int | None = None
    max_evaluations: int | None = None
    prune: bool = True
    fp32_metric: float | None = None


class _Search:
    """The search's state: the candidate sets evaluated so far (metrics only) and the evaluation count."""

    def __init__(
        self, model: nn.Module, prepared: GraphModule, evaluate: Evaluator, budget: float, options: SearchOptions
    ) -> None:
        self.model, self.prepared, self.evaluate, self.budget, self.opts = model, prepared, evaluate, budget, options
        self.config = options.config or prepared_info(prepared, calibrated=True).config
        self.cache: dict[frozenset[str], float] = {}  # metrics only: models are rebuilt, large ones would pile up
        self.evaluations = 0
        self.steps: list[SearchStep] = []
        self.sensitivity: list[LayerSensitivity] = []
        self.fp32 = self.int8 = math.nan

    def score(self, module: Any) -> float:
        self.evaluations += 1
        metrics = self.evaluate(module)
        if self.opts.metric not in metrics:
            raise ConfigError(f"evaluate() returned {sorted(metrics)}, without the metric {self.opts.metric!r}.")
        return float(metrics[self.opts.metric])

    def metric_with(self, skip: Sequence[str]) -> float:
        """Metric with ``skip`` in float, each set evaluated once (NaN: needs calib_batches)."""
        key = frozenset(skip)
        if key not in self.cache:
            qgm = quantize_with_skip(self.model, self.prepared, list(skip), self.config, self.opts.calib_batches)
            self.cache[key] = math.nan if qgm is None else self.score(qgm)
        return self.cache[key]

    def can_evaluate(self, skip: Sequence[str]) -> bool:
        """``skip`` is cached, or the evaluation limit leaves room for it."""
        limit = self.opts.max_evaluations
        return frozenset(skip) in self.cache or limit is None or self.evaluations < limit

    def meets(self, value: float) -> bool:
        return not math.isnan(value) and self.fp32 - value <= self.budget + 1e-12

    def result(self, final: float, layers: list[str], note: str) -> MixedPrecisionResult:
        cfg = dataclasses.replace(self.config, skip=tuple(dict.fromkeys((*self.config.skip, *layers))))
        qgm = quantize_with_skip(self.model, self.prepared, layers, self.config, self.opts.calib_batches)
        if qgm is None:  # the chosen set was built (and evaluated) before
            raise InternalError(f"mixed precision: the chosen float set {layers} could not be rebuilt")
        return MixedPrecisionResult(
            metric=self.opts.metric,
            budget=self.budget,
            fp32=self.fp32,
            int8=self.int8,
            final=final,
            float_layers=layers,
            met_budget=self.fp32 - final <= self.budget + 1e-12,
            config=cfg,
            model=qgm,
            sensitivity=self.sensitivity,
            steps=self.steps,
            evaluations=self.evaluations,
            proxy=self.opts.proxy,
            note=note,
        )

    def rank_layers(self) -> list[str]:
        """Proxy ranking, then leave-one-out on the top few: measured gains first, unmeasured, then no gain."""
        proxy_inputs = self.opts.proxy_inputs
        if proxy_inputs is None:
            if self.opts.calib_batches is None:
                raise ConfigError("mixed_precision_search needs proxy_inputs or calib_batches for the proxies.")
            first = next(iter(self.opts.calib_batches))
            proxy_inputs = tuple(first) if isinstance(first, (tuple, list)) else (first,)
        sens = layer_sensitivity(
            self.model,
            self.prepared,
            proxy_inputs,
            config=self.config,
            calib_batches=self.opts.calib_batches,
            proxy=self.opts.proxy,
        )
        self.sensitivity = sens
        for s in sens[: self.opts.max_verify]:
            if not self.can_evaluate((s.layer,)):
                break
            value = self.metric_with((s.layer,))
            if not math.isnan(value):
                s.metric_if_float, s.recovered = value, value - self.int8
        measured = sorted(
            (s for s in sens if s.recovered is not None and s.recovered > 0), key=lambda s: -(s.recovered or 0.0)
        )
        return (
            [s.layer for s in measured]
            + [s.layer for s in sens if s.recovered is None]
            + [s.layer for s in sens if s.recovered is not None and s.recovered <= 0]
        )

    def add_greedily(self, order: list[str]) -> tuple[list[str], float, str | None]:
        """Add layers in ``order`` while they improve the metric, until the budget is met (note: why not)."""
        chosen, current = [], self.int8
        limit = self.opts.max_float_layers if self.opts.max_float_layers is not None else len(order)
        for layer in order:
            if len(chosen) >= limit:
                return chosen, current, f"stopped at max_float_layers={limit}"
            if not self.can_evaluate((*chosen, layer)):
                return chosen, current, f"stopped at max_evaluations={self.opts.max_evaluations}"
            value = self.metric_with((*chosen, layer))
            accepted = not math.isnan(value) and value > current
            self.steps.append(SearchStep((*chosen, layer), value, accepted))
            if accepted:
                chosen, current = [*chosen, layer], value
                if self.meets(current):
                    return chosen, current, None
        untried = sum(math.isnan(s.metric) for s in self.steps)
        needs = f"; {untried} needed calib_batches to re-calibrate" if untried else ""
        return chosen, current, "every layer was tried" + needs

    def prune(self, chosen: list[str], current: float) -> tuple[list[str], float]:
        """Greedy additions interact: drop any layer whose removal still meets the budget (latest first)."""
        for layer in reversed(chosen[:-1] if self.opts.prune else []):
            rest = [n for n in chosen if n != layer]
            if not self.can_evaluate(rest):
                break
            value = self.metric_with(rest)
            self.steps.append(SearchStep(tuple(rest), value, self.meets(value)))
            if self.meets(value):
                chosen, current = rest, value
        return chosen, current


def mixed_precision_search(
    model: nn.Module,
    prepared: GraphModule,
    evaluate: Evaluator,
    budget: float,
    *,
    metric: str = "mAP",
    config: QuantConfig | None = None,
    calib_batches: Sequence[Any] | None = None,
    proxy_inputs: Sequence[torch.Tensor] | None = None,
    proxy: str = "output",
    max_verify: int = 4,
    max_float_layers: int | None = None,
    max_evaluations: int | None = None,
    prune: bool = True,
    fp32_metric: float | None = None,
) -> MixedPrecisionResult:
    """Keep the fewest layers in float so that ``metric(FP32) - metric(INT8) <= budget``.

    Args:
        model: the float model.
        prepared: ``ftp.prepare(model, ...)`` calibrated with ``ftp.calibrate`` (its statistics are reused).
        evaluate: ``evaluate(model) -> metrics`` (e.g. ``detection_evaluator(val, centernet_decode)`` or a
            :class:`~fx2trt_pipeline.validate.evaluation.CandidateScorer`); higher is better.
        budget: the allowed drop in metric units (0.003 = 0.3 mAP points).
        metric, config, calib_batches, proxy_inputs, proxy, max_verify, max_float_layers, max_evaluations,
            prune, fp32_metric: the search's settings, described with :class:`SearchOptions`.

    Returns:
        A :class:`MixedPrecisionResult`; ``met_budget`` is False (and ``note`` says why) when the
        budget could not be met within the limits.

    Raises:
        ConfigError: ``prepared`` is not calibrated, no proxy inputs, or ``metric`` is missing.

    Example:
        >>> result = mixed_precision_search(model, prepared, detection_evaluator(val, centernet_decode),
        ...                                 budget=0.003, calib_batches=batches)     # doctest: +SKIP
        >>> result.met_budget, result.float_layers                                 # doctest: +SKIP
        (True, ['wh_2'])
    """
    opts = SearchOptions(
        metric=metric,
        config=config,
        calib_batches=calib_batches,
        proxy_inputs=proxy_inputs,
        proxy=proxy,
        max_verify=max_verify,
        max_float_layers=max_float_layers,
        max_evaluations=max_evaluations,
        prune=prune,
        fp32_metric=fp32_metric,
    )
    search = _Search(model, prepared, evaluate, budget, opts)
    convert(prepared, search.config)  # fail early when the config needs statistics that were not collected
    search.fp32 = float(opts.fp32_metric) if opts.fp32_metric is not None else search.score(model)
    search.int8 = search.metric_with(())
    if search.meets(search.int8):  # nothing to recover: skip the proxies too
        return search.result(search.int8, [], "full INT8 already meets the budget")
    chosen, current, note = search.add_greedily(search.rank_layers())
    if note is not None:
        return search.result(current, chosen, note)
    chosen, current = search.prune(chosen, current)
    return search.result(current, chosen, "")
