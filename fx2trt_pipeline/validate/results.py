"""What an evaluation found: per-backend rows, the task-metric result the gate reads, the whole evaluation.

::

    BackendRow      one backend: task metrics, agreement with FP32, cosine vs simulated, status
    AccuracyResult  the task metric of fp32 / simulated / each engine-side backend (what check_parity reads)
    Evaluation      every row, the engine backend and why, the gate lines and the verdict

Plain data: :mod:`fx2trt_pipeline.validate.evaluation` fills them, :mod:`~fx2trt_pipeline.validate.gate`
judges them, the CLI and the report print them.

Example:
    >>> run = BackendRun("fp32", {"top1": 0.75}, 0.1)
    >>> AccuracyResult("classification", "top1", {"fp32": run, "simulated": run}, None, "", 4).int8_drop
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.compare import format_table

#: Stands for an infinite SQNR (identical outputs) in JSON, which has no Infinity; the report shows it as ∞.
SQNR_EXACT = 999.0
#: Agreement with the FP32 model's predictions (same inputs, no labels needed).
AGREEMENT_METRICS = ("agree_top1", "agree_top5")


@dataclass
class BackendRun:
    """Metrics of one way of running the model, and how long evaluating it took."""

    name: str
    metrics: dict[str, float]
    seconds: float


@dataclass
class AccuracyResult:
    """Task metrics of the FP32 model, the simulated INT8 model and the engine backend(s).

    Attributes:
        task: ``"detection"`` or ``"classification"``.
        metric: the primary metric (``"mAP"`` or ``"top1"``); the gate compares it.
        runs: ``fp32``, ``simulated`` and one entry per engine backend that ran.
        engine_backend: the backend standing for the engine (first that ran), ``None`` if none could.
        engine_reason: why that backend (e.g. why the TensorRT engine itself could not run here).
        num_samples: images / samples scored.
    """

    task: str
    metric: str
    runs: dict[str, BackendRun]
    engine_backend: str | None
    engine_reason: str
    num_samples: int

    def value(self, run: str, metric: str | None = None) -> float | None:
        """One metric of one run (``None`` when that run did not happen)."""
        entry = self.runs.get(run)
        return None if entry is None else entry.metrics.get(metric or self.metric)

    @property
    def fp32(self) -> float:
        """Primary metric of the float model."""
        return float(self.runs["fp32"].metrics[self.metric])

    @property
    def simulated(self) -> float:
        """Primary metric of the simulated INT8 GraphModule."""
        return float(self.runs["simulated"].metrics[self.metric])

    @property
    def engine(self) -> float | None:
        """Primary metric of the engine backend, ``None`` when no backend could run."""
        return None if self.engine_backend is None else self.value(self.engine_backend)

    @property
    def int8_drop(self) -> float:
        """``fp32 - simulated`` (positive: INT8 is worse)."""
        return self.fp32 - self.simulated

    @property
    def engine_delta(self) -> float | None:
        """``|engine - simulated|``, ``None`` without an engine backend."""
        return None if self.engine is None else abs(self.engine - self.simulated)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; :meth:`from_dict` inverts it."""
        return {
            "task": self.task,
            "metric": self.metric,
            "engine_backend": self.engine_backend,
            "engine_reason": self.engine_reason,
            "num_samples": self.num_samples,
            "runs": {k: {"metrics": dict(r.metrics), "seconds": r.seconds} for k, r in self.runs.items()},
            "fp32": self.fp32,
            "simulated": self.simulated,
            "engine": self.engine,
            "int8_drop": self.int8_drop,
            "engine_delta": self.engine_delta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccuracyResult:
        """Rebuild a result saved with :meth:`to_dict` (e.g. by a CI job that ran the validator).

        Raises:
            ConfigError: keys are missing or the runs lack ``fp32`` / ``simulated``.
        """
        try:
            runs = {
                k: BackendRun(k, {m: float(v) for m, v in r["metrics"].items()}, float(r.get("seconds", 0.0)))
                for k, r in data["runs"].items()
            }
            result = cls(
                str(data["task"]),
                str(data["metric"]),
                runs,
                data.get("engine_backend"),
                str(data.get("engine_reason", "")),
                int(data.get("num_samples", 0)),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"Not an AccuracyResult dict ({exc.__class__.__name__}: {exc}); write it with AccuracyResult.to_dict()."
            ) from exc
        missing = [k for k in ("fp32", "simulated") if k not in runs or result.metric not in runs[k].metrics]
        if missing:
            raise ConfigError(f"AccuracyResult dict lacks the {result.metric!r} metric of run(s) {missing}.")
        return result

    def __str__(self) -> str:
        names = [
            n
            for n in ("mAP", "AP50", "top1", "top5", *AGREEMENT_METRICS)
            if any(n in r.metrics for r in self.runs.values())
        ]
        rows = []
        for key, run in self.runs.items():
            label = key + (" (engine)" if key == self.engine_backend else "")
            rows.append((label, *[_pct(run.metrics.get(n)) for n in names], f"{run.seconds:.1f}"))
        table = format_table(("backend", *names, "seconds"), rows)
        delta = self.engine_delta
        return (
            f"{self.task} accuracy on {self.num_samples} samples ({self.metric}, in points):\n{table}\n"
            f"INT8 drop (fp32 - simulated): {100 * self.int8_drop:+.2f} points; engine vs simulated: "
            + ("n/a" if delta is None else f"{100 * delta:.2f} points")
            + f"\nengine backend: {self.engine_backend or 'none'} ({self.engine_reason})"
        )


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


@dataclass
class BackendRow:
    """One row of the accuracy table.

    ``metrics`` holds the task metrics (``mAP``, ``top1``...) and, for classifiers, the agreement with
    FP32 (``agree_top1``, ``agree_top5``); ``cosine_vs_fp32`` is taken over every evaluated output.
    """

    key: str
    label: str
    runs_on: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    cosine_vs_simulated: float | None = None
    sqnr_vs_fp32: float | None = None
    cosine_vs_fp32: float | None = None
    status: str = "ok"
    note: str = ""
    images: int = 0
    tie_parity: dict[str, Any] | None = None  # validate.tie_parity report (to_dict) of an engine-side backend


@dataclass
class Evaluation:
    """Everything the validate step found; ``passed`` is the gate verdict."""

    task: str
    metric: str | None
    rows: list[BackendRow]
    engine_backend: str | None
    engine_reason: str
    num_samples: int
    gate_lines: list[str] = field(default_factory=list)
    passed: bool = False
    parity_images: int = 0
    warnings: list[str] = field(default_factory=list)

    def row(self, key: str) -> BackendRow | None:
        """The row of one backend, ``None`` when it did not run."""
        return next((r for r in self.rows if r.key == key and r.status != "skipped"), None)

    @property
    def engine_side(self) -> list[BackendRow]:
        """Rows of the engine-side backends that ran."""
        return [r for r in self.rows if r.key not in ("fp32", "simulated") and r.status != "skipped"]

    def accuracy(self) -> AccuracyResult | None:
        """The task-metric result (``None`` without a metric, e.g. unlabelled data)."""
        if self.metric is None:
            return None
        runs = {r.key: BackendRun(r.key, dict(r.metrics), r.seconds) for r in self.rows if r.status != "skipped"}
        return AccuracyResult(self.task, self.metric, runs, self.engine_backend, self.engine_reason, self.num_samples)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the run manifest and ``fx2trt validate --json``)."""
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [asdict(r) for r in self.rows]}


def json_safe(value: Any) -> Any:
    """``value`` with every NaN / infinite float replaced by ``None`` (strict JSON has neither).

    Example:
        >>> json_safe({"a": [1.0, float("nan")], "b": float("inf")})
        {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def finite_or_none(value: float | None) -> float | None:
    """``None`` for NaN, :data:`SQNR_EXACT` for +inf, else the float (for JSON-bound statistics).

    Example:
        >>> finite_or_none(float("inf")), finite_or_none(float("nan")), finite_or_none(0.5)
        (999.0, None, 0.5)
    """
    if value is None or math.isnan(value):
        return None
    return SQNR_EXACT if math.isinf(value) and value > 0 else float(value)


__all__ = [
    "AGREEMENT_METRICS",
    "AccuracyResult",
    "BackendRow",
    "BackendRun",
    "Evaluation",
    "SQNR_EXACT",
    "finite_or_none",
    "json_safe",
]
