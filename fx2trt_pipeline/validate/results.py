"""What an evaluation found: one row per backend and the whole evaluation (the gate's verdict included).

::

    BackendRow   one backend: task metrics, agreement with FP32, cosine vs FP32 / simulated, status
    Evaluation   every row, the engine backend and why, the gate lines and the verdict

Plain data: :mod:`fx2trt_pipeline.validate.evaluation` fills them, :mod:`~fx2trt_pipeline.validate.gate`
judges them (the only place that sets a row's status or the verdict), the CLI and the report print them.
The library (``validate_detector`` / ``validate_classifier``), ``fx2trt build`` and ``fx2trt validate`` all
return or write this one form; :meth:`Evaluation.to_dict` / :func:`load_evaluation` round-trip it as JSON.

Example:
    >>> rows = [BackendRow(k, k, k, {"top1": v}) for k, v in [("fp32", 0.75), ("simulated", 0.7)]]
    >>> ev = Evaluation("classification", "top1", rows, None, "no engine", 20)
    >>> round(ev.int8_drop, 4), ev.engine
    (0.05, None)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fx2trt_pipeline.errors import AccuracyGateError, ConfigError
from fx2trt_pipeline.validate.compare import format_table

#: Stands for an infinite SQNR (identical outputs) in JSON, which has no Infinity; the report shows it as ∞.
SQNR_EXACT = 999.0
#: Agreement with the FP32 model's predictions (same inputs, no labels needed).
AGREEMENT_METRICS = ("agree_top1", "agree_top5")
#: The reference rows; every other row is an engine-side backend.
REFERENCE_KEYS = ("fp32", "simulated")


@dataclass
class BackendRow:
    """One row of the accuracy table.

    ``metrics`` holds the task metrics (``mAP``, ``top1``...) and, for classifiers, the agreement with
    FP32 (``agree_top1``, ``agree_top5``); ``cosine_vs_fp32`` is taken over the class output of every
    evaluated item (classifiers) or the parity batch. ``status`` is ``ok`` / ``failed`` (set by the gate) or
    ``skipped`` (the backend could not run; ``note`` says why).
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
    outputs: list[dict[str, Any]] = field(default_factory=list)  # every output vs FP32 / simulated (parity batch)
    parity_seconds: float = 0.0  # comparing outputs and tie-aware parity, after scoring

    @property
    def ran(self) -> bool:
        """The backend ran (it is not a skipped row)."""
        return self.status != "skipped"


@dataclass
class Evaluation:
    """Everything an evaluation found; ``passed`` and ``gate_lines`` are the gate's verdict.

    Attributes:
        task: ``detection`` | ``classification`` | ``none``.
        metric: the primary task metric (``mAP`` / ``top1``), ``None`` without labels.
        rows: ``fp32``, ``simulated``, then every engine-side backend (ran or skipped).
        engine_backend: the backend standing for the engine (first that ran), ``None`` if none could.
        engine_reason: why that backend (e.g. why the TensorRT engine itself could not run here).
        num_samples: images / samples scored.
        gate_lines, passed: the gate's lines (``PASS ...`` / ``FAIL ...``) and verdict.
        parity_images: images of the parity batch (outputs compared value by value).
        warnings: numbers that say more about the data than the model (e.g. labels that do not match).
        data_note: which images were scored when not all of them (an automatic choice used the others).
    """

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
    data_note: str = ""  # which images were scored, when not all (e.g. the half an automatic choice left out)

    def row(self, key: str) -> BackendRow | None:
        """The row of one backend, ``None`` when it did not run."""
        return next((r for r in self.rows if r.key == key and r.ran), None)

    @property
    def engine_side(self) -> list[BackendRow]:
        """Rows of the engine-side backends that ran."""
        return [r for r in self.rows if r.key not in REFERENCE_KEYS and r.ran]

    def value(self, key: str, metric: str | None = None) -> float | None:
        """One metric (default: the primary one) of one backend; ``None`` when it did not run or lacks it."""
        row, name = self.row(key), metric or self.metric
        return None if row is None or name is None else row.metrics.get(name)

    def _primary(self, key: str) -> float:
        value = self.value(key)
        if value is None:
            raise ConfigError(f"The evaluation has no {self.metric or 'task'} metric for {key!r} (unlabelled data?)")
        return float(value)

    @property
    def fp32(self) -> float:
        """Primary metric of the float model."""
        return self._primary("fp32")

    @property
    def simulated(self) -> float:
        """Primary metric of the simulated INT8 GraphModule."""
        return self._primary("simulated")

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

    def raise_for_failure(self) -> Evaluation:
        """Raise :class:`AccuracyGateError` naming every failed gate line unless passed; returns ``self``."""
        if not self.passed:
            failed = [line for line in self.gate_lines if line.startswith("FAIL")] or ["the gate was not run"]
            raise AccuracyGateError("; ".join(failed))
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the run manifest, ``fx2trt validate --json``); :func:`load_evaluation` reads it."""
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [asdict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """Rebuild an evaluation saved with :meth:`to_dict` (extra keys, e.g. ``fx2trt validate --json``'s
        ``lines``, are ignored).

        Raises:
            ConfigError: keys are missing or of the wrong type.
        """
        try:
            row_keys = {f.name for f in fields(BackendRow)}
            rows = [BackendRow(**{k: v for k, v in r.items() if k in row_keys}) for r in data["rows"]]
            keys = {f.name for f in fields(cls)} - {"rows"}
            return cls(rows=rows, **{k: v for k, v in data.items() if k in keys})
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"Not a saved evaluation ({exc.__class__.__name__}: {exc}); write it with Evaluation.to_dict() "
                "or `fx2trt validate --json`."
            ) from exc

    def __str__(self) -> str:
        names = [
            n for n in ("mAP", "AP50", "top1", "top5", *AGREEMENT_METRICS) if any(n in r.metrics for r in self.rows)
        ]
        rows = []
        for r in self.rows:
            label = r.key + (" (engine)" if r.key == self.engine_backend else "")
            if not r.ran:
                rows.append((label, *["-" for _ in names], "-", "-", f"skipped: {r.note}"))
                continue
            cosine = "-" if r.cosine_vs_fp32 is None else f"{r.cosine_vs_fp32:.6f}"
            status = r.status + (f": {r.note}" if r.note else "")
            rows.append((label, *[_pct(r.metrics.get(n)) for n in names], cosine, f"{r.seconds:.1f}", status))
        table = format_table(("backend", *names, "cosine vs FP32", "seconds", "status"), rows)
        head = f"{self.task} evaluation on {self.num_samples} samples (metrics in points):"
        verdict = "\n".join(self.gate_lines) or "(not gated)"
        return f"{head}\n{table}\nengine backend: {self.engine_backend or 'none'} ({self.engine_reason})\n{verdict}"


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def load_evaluation(source: Evaluation | Mapping[str, Any] | str | Path) -> Evaluation:
    """An :class:`Evaluation` from itself, its ``to_dict()``, a run manifest or a JSON file holding either
    (``fx2trt validate --json``, ``fx2trt_run.json``).

    Raises:
        ConfigError: the file is missing, not JSON, or holds no saved evaluation.
    """
    if isinstance(source, Evaluation):
        return source
    if not isinstance(source, Mapping):
        path = Path(source)
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"Cannot read the evaluation {path}: {exc}. Write it with `fx2trt validate --json`."
            ) from exc
    if isinstance(source, Mapping) and isinstance(source.get("evaluation"), Mapping):  # a run manifest
        source = source["evaluation"]
    if not isinstance(source, Mapping):
        raise ConfigError("Not a saved evaluation: expected a JSON object with 'rows'.")
    return Evaluation.from_dict(source)


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
    "BackendRow",
    "Evaluation",
    "REFERENCE_KEYS",
    "SQNR_EXACT",
    "finite_or_none",
    "json_safe",
    "load_evaluation",
]
