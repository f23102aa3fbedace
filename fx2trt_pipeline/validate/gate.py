"""The accuracy gate: one ordered list of checks over an evaluation, one verdict, one exit code.

::

    GateSpec (thresholds) ─┐
    Evaluation ────────────┴─ GATE_CHECKS, in order ─> [GateLine("PASS ..."), GateLine("FAIL ...")] ─> passed
        check_engine_ran      an engine-side backend ran (a gate that checked nothing must not pass)
        check_output_parity   tie-aware parity of every engine-side backend vs the simulated model, quantize
                              layer by layer (a TensorRT engine: output cosine >= min_cosine)
        check_task_metric     |metric(engine) - metric(simulated)| <= engine_tolerance and
                              metric(FP32) - metric(simulated) <= int8_budget      (check_parity)
        check_min_metric      metric(engine) >= min_metric

A new check is one function ``(Evaluation, GateSpec) -> list[GateLine]`` added to :data:`GATE_CHECKS`
(or passed to :func:`gate_evaluation`). Metric values are in [0, 1], so 0.003 is 0.3 points.
``fx2trt build`` and ``fx2trt validate`` exit with :class:`~fx2trt_pipeline.errors.ExitCode`:
0 pass, 1 gate failed, 2 bad input, 3 backend unavailable.

Example:
    >>> from fx2trt_pipeline.validate.results import AccuracyResult, BackendRun
    >>> runs = {k: BackendRun(k, {"top1": v}, 0.0) for k, v in
    ...         [("fp32", 0.80), ("simulated", 0.79), ("network_executor", 0.79)]}
    >>> result = AccuracyResult("classification", "top1", runs, "network_executor", "no GPU", 100)
    >>> gate = check_parity(result, engine_tolerance=0.0, int8_budget=0.02)
    >>> bool(gate), round(gate.int8_drop, 4)
    (True, 0.01)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fx2trt_pipeline.errors import AccuracyGateError, ConfigError
from fx2trt_pipeline.validate.results import AccuracyResult, Evaluation

#: A real engine may reorder float accumulations; 0.2 mAP points covers that, not a wrong layer.
DEFAULT_ENGINE_TOLERANCE = 0.002
#: The project's INT8 target: at most 0.3 mAP points below FP32.
DEFAULT_INT8_BUDGET = 0.003


@dataclass(frozen=True)
class GateSpec:
    """Accuracy thresholds (metric values in [0, 1]: 0.003 is 0.3 mAP points); ``None`` disables a check.

    Attributes:
        min_cosine: smallest output cosine of each INT8 backend vs the simulated model (output parity).
        engine_tolerance: largest ``|metric(engine) - metric(simulated)|``.
        int8_budget: largest ``metric(FP32) - metric(simulated INT8)``.
        min_metric: smallest acceptable task metric of the engine backend.
    """

    min_cosine: float | None = 0.999
    engine_tolerance: float = DEFAULT_ENGINE_TOLERANCE
    int8_budget: float | None = DEFAULT_INT8_BUDGET
    min_metric: float | None = None


@dataclass(frozen=True)
class GateLine:
    """One check's verdict; prints as ``PASS ...`` / ``FAIL ...``."""

    passed: bool
    text: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.text}"


@dataclass(frozen=True)
class GateResult:
    """Verdict of :func:`check_parity`; truthy when both checks pass.

    Attributes:
        passed: both checks passed.
        reason: one line naming every failed check with its numbers (or the passing numbers).
        metric: the compared metric.
        fp32, simulated, engine: its values (``engine`` is ``None`` when no engine backend ran).
        engine_backend: which backend stood for the engine.
        engine_delta, int8_drop: ``|engine - simulated|`` and ``fp32 - simulated``.
        engine_tolerance, int8_budget: the thresholds used.
    """

    passed: bool
    reason: str
    metric: str
    fp32: float
    simulated: float
    engine: float | None
    engine_backend: str | None
    engine_delta: float | None
    int8_drop: float
    engine_tolerance: float
    int8_budget: float

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.reason

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)

    def raise_for_failure(self) -> GateResult:
        """Raise :class:`AccuracyGateError` with :attr:`reason` unless passed; returns ``self``."""
        if not self.passed:
            raise AccuracyGateError(self.reason)
        return self


def _check_threshold(name: str, value: float, allow_negative: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or (value < 0 and not allow_negative)
    ):
        kind = "a number" if allow_negative else "a non-negative number"
        raise ConfigError(f"{name} must be {kind} in metric units (0.003 = 0.3 points), got {value!r}")
    return float(value)


def _parity_failures(result: AccuracyResult, name: str, tol: float, require_engine: bool) -> list[str]:
    backend, sim = result.engine_backend, result.value("simulated", name)
    engine = result.value(backend, name) if backend is not None else None
    if engine is None:
        return [f"no engine backend ran ({result.engine_reason})"] if require_engine else []
    delta = abs(engine - sim)
    if not delta <= tol + 1e-12:  # "not <=" also fails NaN
        return [
            f"engine ({backend}) {name} {engine:.4f} vs simulated {sim:.4f}: |delta| {delta:.4f} > tolerance {tol:.4f}"
        ]
    return []


def check_parity(
    result: AccuracyResult,
    engine_tolerance: float = DEFAULT_ENGINE_TOLERANCE,
    int8_budget: float = DEFAULT_INT8_BUDGET,
    *,
    metric: str | None = None,
    require_engine: bool = True,
) -> GateResult:
    """Gate a task-metric result: engine parity with the simulated model and the INT8 budget.

    Args:
        result: e.g. from :func:`~fx2trt_pipeline.validate.accuracy.validate_detector`.
        engine_tolerance: largest allowed ``|engine - simulated|`` (metric units: 0.002 = 0.2 points).
        int8_budget: largest allowed ``fp32 - simulated`` (negative: INT8 must beat FP32 by that much).
        metric: metric to compare (default: the result's primary metric, ``mAP`` / ``top1``).
        require_engine: fail when no engine backend ran (a gate that cannot check parity must not pass).

    Returns:
        A :class:`GateResult`, truthy when both checks pass; ``reason`` is one line.

    Raises:
        ConfigError: a negative/NaN threshold, or ``metric`` missing from the result.
    """
    tol = _check_threshold("engine_tolerance", engine_tolerance)
    budget = _check_threshold("int8_budget", int8_budget, allow_negative=True)
    name = metric or result.metric
    fp32, sim = result.value("fp32", name), result.value("simulated", name)
    if fp32 is None or sim is None:
        raise ConfigError(
            f"The result has no {name!r} metric for fp32/simulated; it has {sorted(result.runs['simulated'].metrics)}."
        )
    backend = result.engine_backend
    engine = result.value(backend, name) if backend is not None else None
    delta = None if engine is None else abs(engine - sim)
    drop = fp32 - sim
    failures = _parity_failures(result, name, tol, require_engine)
    if not drop <= budget + 1e-12:
        failures.append(f"INT8 {name} drop fp32 {fp32:.4f} - simulated {sim:.4f} = {drop:.4f} > budget {budget:.4f}")
    if failures:
        reason = f"FAIL {name}: " + "; ".join(failures)
    else:
        parity = (
            "engine not checked"
            if engine is None
            else f"engine ({backend}) {engine:.4f} vs simulated {sim:.4f} (|delta| {delta:.4f} <= {tol:.4f})"
        )
        reason = f"PASS {name}: {parity}; fp32 {fp32:.4f} - simulated {sim:.4f} = {drop:.4f} <= budget {budget:.4f}"
    return GateResult(not failures, reason, name, fp32, sim, engine, backend, delta, drop, tol, budget)


def enforce_parity(
    result: AccuracyResult,
    engine_tolerance: float = DEFAULT_ENGINE_TOLERANCE,
    int8_budget: float = DEFAULT_INT8_BUDGET,
    **kwargs: Any,
) -> GateResult:
    """:func:`check_parity`, raising :class:`AccuracyGateError` (message: the one-line reason) on failure.

    Example:
        >>> enforce_parity(result, int8_budget=0.003)   # doctest: +SKIP
    """
    return check_parity(result, engine_tolerance, int8_budget, **kwargs).raise_for_failure()


def load_result(source: AccuracyResult | Mapping[str, Any] | str | Path) -> AccuracyResult:
    """An :class:`AccuracyResult` from itself, its ``to_dict()`` or a JSON file holding that dict.

    Raises:
        ConfigError: the file is missing, not JSON, or not a saved result.
    """
    if isinstance(source, AccuracyResult):
        return source
    if isinstance(source, Mapping):
        return AccuracyResult.from_dict(source)
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"Cannot read the accuracy result {path}: {exc}. Write it with AccuracyResult.to_dict()."
        ) from exc
    return AccuracyResult.from_dict(data)


GateCheck = Callable[[Evaluation, GateSpec], list[GateLine]]


def check_engine_ran(evaluation: Evaluation, spec: GateSpec) -> list[GateLine]:
    """Fail when no engine-side backend ran: the gate would have checked nothing."""
    if evaluation.engine_backend is not None:
        return []
    return [GateLine(False, f"no INT8 backend besides the simulated model ran ({evaluation.engine_reason})")]


def check_output_parity(evaluation: Evaluation, spec: GateSpec) -> list[GateLine]:
    """Every engine-side backend vs the simulated model, on the parity batch: tie-aware parity per
    quantize layer where the backend runs region by region (:mod:`~fx2trt_pipeline.validate.tie_parity`;
    end-to-end cosine shown beside its noise floor), else output cosine >= ``spec.min_cosine``."""
    lines = []
    for row in evaluation.engine_side:
        if row.tie_parity is not None:
            lines.append(GateLine(bool(row.tie_parity["passed"]), f"outputs: {row.tie_parity['summary']}"))
            continue
        if spec.min_cosine is None:
            continue
        cosine = row.cosine_vs_simulated
        ok = cosine is not None and cosine >= spec.min_cosine
        shown = float("nan") if cosine is None else cosine
        lines.append(
            GateLine(
                ok,
                f"outputs: {row.key} vs simulated cosine {shown:.6f} "
                f"{'>=' if ok else '<'} {spec.min_cosine} on {evaluation.parity_images} images",
            )
        )
    return lines


def check_task_metric(evaluation: Evaluation, spec: GateSpec) -> list[GateLine]:
    """Engine vs simulated parity and the INT8 budget on the task metric (:func:`check_parity`)."""
    result = evaluation.accuracy()
    if result is None or evaluation.engine_backend is None:
        return []
    budget = math.inf if spec.int8_budget is None else spec.int8_budget
    verdict = check_parity(result, spec.engine_tolerance, budget)
    text = verdict.reason.split(" ", 1)[1]
    if not verdict.passed and verdict.int8_drop > budget:
        text += _resolution_note(result, budget)
    return [GateLine(verdict.passed, text)]


#: Metrics that are a fraction of samples: one sample moves them by 1 / samples.
_PER_SAMPLE_METRICS = ("top1", "top5")


def _resolution_note(result: AccuracyResult, budget: float) -> str:
    """Why a per-sample metric on a small set fails any budget finer than one sample (not a verdict change)."""
    n = result.num_samples
    if result.metric not in _PER_SAMPLE_METRICS or n <= 0 or 1.0 / n <= budget:
        return ""
    return (
        f"; on {n} samples one sample moves {result.metric} by {1.0 / n:.4f}, more than the budget: evaluate "
        f"on at least {math.ceil(1.0 / budget)} samples, or set --int8-budget for this set"
    )


def check_min_metric(evaluation: Evaluation, spec: GateSpec) -> list[GateLine]:
    """The engine backend's task metric is at least ``spec.min_metric``."""
    result = evaluation.accuracy()
    if spec.min_metric is None or result is None or evaluation.engine_backend is None:
        return []
    value = result.value(evaluation.engine_backend)
    value = math.nan if value is None else value
    ok = value >= spec.min_metric
    return [
        GateLine(
            ok,
            f"{result.metric}: {evaluation.engine_backend} {value:.4f} "
            f"{'>=' if ok else '<'} minimum {spec.min_metric:.4f}",
        )
    ]


#: The checks :func:`gate_evaluation` runs, in order.
GATE_CHECKS: list[GateCheck] = [check_engine_ran, check_output_parity, check_task_metric, check_min_metric]


def gate_evaluation(
    evaluation: Evaluation, spec: GateSpec, checks: Sequence[GateCheck] | None = None
) -> list[GateLine]:
    """Run every check on ``evaluation``; sets ``evaluation.gate_lines`` / ``passed`` and returns the lines.

    Example:
        >>> ev = Evaluation("none", None, [], None, "no GPU", 0)
        >>> [str(line) for line in gate_evaluation(ev, GateSpec())], ev.passed
        (['FAIL no INT8 backend besides the simulated model ran (no GPU)'], False)
    """
    lines = [line for check in (GATE_CHECKS if checks is None else checks) for line in check(evaluation, spec)]
    evaluation.gate_lines = [str(line) for line in lines]
    evaluation.passed = all(line.passed for line in lines)
    return lines


def extend_gate(evaluation: Evaluation, lines: Sequence[str], passed: bool) -> None:
    """Add the verdict of a check made outside :data:`GATE_CHECKS` (the plan audit) to a gated evaluation.

    Example:
        >>> ev = Evaluation("none", None, [], None, "no GPU", 0, ["PASS a"], True)
        >>> extend_gate(ev, ["FAIL plan audit: conv c"], False)
        >>> ev.gate_lines, ev.passed
        (['PASS a', 'FAIL plan audit: conv c'], False)
    """
    evaluation.gate_lines.extend(lines)
    evaluation.passed = evaluation.passed and passed


__all__ = [
    "DEFAULT_ENGINE_TOLERANCE",
    "DEFAULT_INT8_BUDGET",
    "GATE_CHECKS",
    "GateCheck",
    "GateLine",
    "GateResult",
    "GateSpec",
    "check_engine_ran",
    "check_min_metric",
    "check_output_parity",
    "check_parity",
    "check_task_metric",
    "enforce_parity",
    "extend_gate",
    "gate_evaluation",
    "load_result",
]
