"""Pick the calibrator by the task metric: calibrate once, derive every method, score each.

The statistics collected by one calibration pass serve every calibrator (``convert(prepared,
config)`` re-derives the scales without running the model), so the search costs one evaluation per
candidate and nothing more::

    prepare + calibrate (once) ─┬─ convert(minmax)          ─ evaluate ─┐
                                ├─ convert(percentile 99.9) ─ evaluate  ├─ CalibratorTable ─ best
                                ├─ ...                                   │
                                └─ convert(entropy)         ─ evaluate ─┘

What ranks the candidates is a list of metrics (:func:`fidelity_order`, what ``fx2trt build --calibrator auto``
uses): agreement with the FP32 model's predictions (``agree_top1``), then output cosine with FP32, and the task
metric (top-1 / mAP) only after those, so that a few noisy labels cannot pick a calibrator that changes more
predictions (:class:`~fx2trt_pipeline.validate.scoring.CandidateScorer` returns all of them). Candidates within
``tie_tolerance`` of the best on the first metric are told apart by the next ones, then by simplicity. Scoring on
the images you later report on is optimistic: the build chooses on half of its evaluation images
(``validate.eval_data.split_alternate``) and reports on the other half.

Example:
    >>> from fx2trt_pipeline.validate.accuracy import detection_evaluator
    >>> from fx2trt_pipeline.models.centernet import centernet_decode
    >>> from fx2trt_pipeline.validate.demo_detector import demo_setup
    >>> setup = demo_setup()                                                              # doctest: +SKIP
    >>> evaluate = detection_evaluator(setup.val, centernet_decode)                       # doctest: +SKIP
    >>> qgm, table = best_calibrator(setup.prepared, evaluate)                            # doctest: +SKIP
    >>> print(table)                                                                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.api import convert, prepared_info
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.validate.compare import format_table

Evaluator = Callable[[Any], Mapping[str, float]]


@dataclass(frozen=True)
class CalibratorChoice:
    """One calibrator setting: ``calibrator`` plus its ``percentile`` (percentile calibrator only)."""

    calibrator: str
    percentile: float | None = None

    @property
    def label(self) -> str:
        """``"percentile 99.99"``, ``"minmax"``, ..."""
        return self.calibrator if self.percentile is None else f"{self.calibrator} {self.percentile:g}"

    def config(self, base: QuantConfig) -> QuantConfig:
        """``base`` with this calibrator (placement settings untouched, so the statistics are reused)."""
        percentile = self.percentile if self.percentile is not None else base.percentile
        return dataclasses.replace(base, calibrator=self.calibrator, percentile=percentile)


#: Candidates, simplest first (a tie goes to the earlier one): minmax has no parameter, percentile
#: one fixed clipping parameter, MSE searches a threshold, entropy searches one with a KL model of
#: the quantized histogram.
DEFAULT_CHOICES: tuple[CalibratorChoice, ...] = (
    CalibratorChoice("minmax"),
    CalibratorChoice("percentile", 99.9),
    CalibratorChoice("percentile", 99.99),
    CalibratorChoice("percentile", 99.999),
    CalibratorChoice("mse"),
    CalibratorChoice("entropy"),
)
#: Differences below this (metric units; 1e-4 = 0.01 points) count as ties.
DEFAULT_TIE_TOLERANCE = 1e-4
#: What breaks a tie on the searched metric, in order (higher wins); then the simpler candidate.
TIE_BREAKERS = ("agree_top1", "cosine_fp32")


def fidelity_order(classifies: bool, task_metric: str | None = None) -> tuple[str, ...]:
    """The metrics an automatic choice ranks by, in order: agreement with FP32 (when the outputs are class
    scores), output cosine with FP32, then the task metric (labels only break ties).

    Example:
        >>> fidelity_order(True, "top1"), fidelity_order(False, "mAP")
        (('agree_top1', 'cosine_fp32', 'top1'), ('cosine_fp32', 'mAP'))
    """
    order = ("agree_top1", "cosine_fp32") if classifies else ("cosine_fp32",)
    return order + ((task_metric,) if task_metric else ())


@dataclass
class CalibratorRow:
    """Metrics of the model quantized with one calibrator; ``seconds`` covers convert + evaluate."""

    choice: CalibratorChoice
    metrics: dict[str, float]
    seconds: float

    def summary(self, metric: str) -> str:
        """``"top1 0.7500, agree_top1 0.9000, cosine_fp32 0.9981"`` (the metrics the choice looks at)."""
        names = [metric, *(n for n in (*TIE_BREAKERS, "top1", "mAP") if n != metric and n in self.metrics)]
        return ", ".join(f"{n} {self.metrics.get(n, math.nan):.4f}" for n in names)


@dataclass
class CalibratorTable:
    """Every candidate's metrics and the chosen one.

    Attributes:
        metric: the metric the choice maximises.
        rows: one per candidate, in candidate (simplicity) order.
        best: the chosen candidate: highest ``metric``; within ``tie_tolerance`` of it, the simplest.
        fp32: metrics of the float model when given (the table then shows the INT8 drop).
        tie_tolerance: the tie threshold used.
        tie_breakers: what told tied candidates apart, in order.
        note: which images the candidates were scored on (e.g. the half held apart from the report).
    """

    metric: str
    rows: list[CalibratorRow]
    best: CalibratorChoice
    fp32: dict[str, float] | None = None
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE
    tie_breakers: tuple[str, ...] = TIE_BREAKERS
    note: str = ""

    def __getitem__(self, label: str) -> CalibratorRow:
        for row in self.rows:
            if row.choice.label == label:
                return row
        raise KeyError(label)

    @property
    def best_row(self) -> CalibratorRow:
        """The row of :attr:`best`."""
        return self[self.best.label]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        rows = [
            {
                "calibrator": r.choice.calibrator,
                "percentile": r.choice.percentile,
                "label": r.choice.label,
                "metrics": r.metrics,
                "seconds": r.seconds,
            }
            for r in self.rows
        ]
        return {
            "metric": self.metric,
            "best": self.best.label,
            "fp32": self.fp32,
            "tie_tolerance": self.tie_tolerance,
            "order": [self.metric, *(n for n in self.tie_breakers if n != self.metric)],
            "note": self.note,
            "rows": rows,
        }

    def __str__(self) -> str:
        extra = [n for n in ("AP50", "top5") if any(n in r.metrics for r in self.rows) and n != self.metric]
        header = ("calibrator", self.metric, *extra, *(("drop vs fp32",) if self.fp32 else ()), "seconds", "")
        rows = []
        for r in self.rows:
            value = r.metrics.get(self.metric, math.nan)
            drop = (f"{100 * (self.fp32[self.metric] - value):+.2f}",) if self.fp32 else ()
            others = [f"{100 * r.metrics.get(n, math.nan):.2f}" for n in extra]
            rows.append(
                (
                    r.choice.label,
                    f"{100 * value:.2f}",
                    *others,
                    *drop,
                    f"{r.seconds:.1f}",
                    "<- best" if r.choice == self.best else "",
                )
            )
        if self.fp32:
            rows.insert(
                0,
                (
                    "fp32",
                    f"{100 * self.fp32[self.metric]:.2f}",
                    *[f"{100 * self.fp32.get(n, math.nan):.2f}" for n in extra],
                    "",
                    "",
                    "",
                ),
            )
        return f"calibrators by {self.metric} (points):\n" + format_table(header, rows)


def pick_best(
    rows: Sequence[CalibratorRow],
    metric: str,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    tie_breakers: Sequence[str] = TIE_BREAKERS,
) -> CalibratorChoice:
    """The highest-``metric`` row's choice; ties are broken by :data:`TIE_BREAKERS`, then by simplicity.

    Rows within ``tie_tolerance`` of the best count as tied; among them the highest agreement with FP32,
    then the highest output cosine wins, and rows equal on those too go to the earliest (simplest). NaN
    metrics never win. Raises :class:`ConfigError` when no row has a finite metric.

    Example:
        >>> rows = [CalibratorRow(CalibratorChoice("minmax"), {"mAP": 0.50}, 0.0),
        ...         CalibratorRow(CalibratorChoice("mse"), {"mAP": 0.50005}, 0.0)]
        >>> pick_best(rows, "mAP").label, pick_best(rows, "mAP", tie_tolerance=0.0).label
        ('minmax', 'mse')
        >>> rows[1].metrics["cosine_fp32"], rows[0].metrics["cosine_fp32"] = 0.99, 0.95
        >>> pick_best(rows, "mAP").label
        'mse'
    """
    scored = [(r.metrics.get(metric, math.nan), r) for r in rows]
    finite = [v for v, _ in scored if not math.isnan(v)]
    if not finite:
        raise ConfigError(f"No calibrator produced a finite {metric!r}; candidates: {[r.choice.label for r in rows]}")
    top = max(finite)
    tied = [r for v, r in scored if not math.isnan(v) and v >= top - tie_tolerance]

    def tie_key(row: CalibratorRow) -> tuple[float, ...]:
        values = [row.metrics.get(n, -math.inf) for n in tie_breakers if n != metric]
        return tuple(-math.inf if math.isnan(v) else v for v in values)

    best = max(tie_key(r) for r in tied)
    return next(r.choice for r in tied if tie_key(r) == best)


def compare_calibrators(
    prepared: torch.fx.GraphModule,
    evaluate: Evaluator,
    *,
    metric: str = "mAP",
    choices: Sequence[CalibratorChoice] = DEFAULT_CHOICES,
    base_config: QuantConfig | None = None,
    fp32_metrics: Mapping[str, float] | None = None,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    tie_breakers: Sequence[str] = TIE_BREAKERS,
) -> CalibratorTable:
    """Convert a calibrated prepared model with every candidate calibrator and score each.

    Args:
        prepared: from ``ftp.prepare`` + ``ftp.calibrate`` (calibrated once; not run again here).
        evaluate: ``evaluate(model) -> metrics``, e.g. a
            :class:`~fx2trt_pipeline.validate.evaluation.CandidateScorer` or
            :func:`~fx2trt_pipeline.validate.accuracy.detection_evaluator`.
        metric: the metric to maximise (``"mAP"``, ``"top1"``...).
        choices: candidates, simplest first.
        base_config: config the candidates vary (default: the prepared one).
        fp32_metrics: metrics of the float model, to show the drop.
        tie_tolerance, tie_breakers: see :func:`pick_best` (:func:`fidelity_order` gives a metric and its
            tie breakers that rank by fidelity to FP32 first).

    Returns:
        A :class:`CalibratorTable`.

    Raises:
        ConfigError: ``prepared`` is not a calibrated prepared model, ``choices`` is empty, or
            ``evaluate`` does not return ``metric``.

    Example:
        >>> table = compare_calibrators(prepared, detection_evaluator(val), metric="mAP")   # doctest: +SKIP
        >>> table.best.label                                                              # doctest: +SKIP
        'mse'
    """
    info = prepared_info(prepared, calibrated=True)
    if not choices:
        raise ConfigError("compare_calibrators needs at least one CalibratorChoice.")
    base = base_config or info.config
    rows = [_score_choice(prepared, evaluate, choice.config(base), choice, metric) for choice in choices]
    fp32 = {k: float(v) for k, v in fp32_metrics.items()} if fp32_metrics is not None else None
    best = pick_best(rows, metric, tie_tolerance, tie_breakers)
    return CalibratorTable(metric, rows, best, fp32, tie_tolerance, tuple(tie_breakers))


def _score_choice(
    prepared: torch.fx.GraphModule, evaluate: Evaluator, config: QuantConfig, choice: CalibratorChoice, metric: str
) -> CalibratorRow:
    start = time.perf_counter()
    metrics = dict(evaluate(convert(prepared, config)))
    if metric not in metrics:
        raise ConfigError(f"evaluate() returned {sorted(metrics)}, without the metric {metric!r}.")
    return CalibratorRow(choice, {k: float(v) for k, v in metrics.items()}, time.perf_counter() - start)


def best_calibrator(
    prepared: torch.fx.GraphModule, evaluate: Evaluator, **kwargs: Any
) -> tuple[torch.fx.GraphModule, CalibratorTable]:
    """The model quantized with the best calibrator, and the table it was chosen from.

    Takes the arguments of :func:`compare_calibrators`. The returned model is converted again from
    the same statistics (cheap: no forward pass) rather than kept from the search.

    Example:
        >>> qgm, table = best_calibrator(prepared, detection_evaluator(val), metric="mAP")   # doctest: +SKIP
        >>> print(table)                                                                   # doctest: +SKIP
    """
    table = compare_calibrators(prepared, evaluate, **kwargs)
    base = kwargs.get("base_config") or prepared_info(prepared).config
    return convert(prepared, table.best.config(base)), table
