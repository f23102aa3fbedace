"""The accuracy gate: one ordered list of checks over an evaluation, one verdict, one exit code.

::

    GateSpec (thresholds) ─┐
    Evaluation ────────────┴─ GATE_CHECKS, in order ─> [GateLine("PASS ..."), GateLine("FAIL ...")] ─> passed
        check_engine_ran      an engine-side backend ran (a gate that checked nothing must not pass)
        check_output_parity   tie-aware parity of every engine-side backend vs the simulated model, quantize
                              layer by layer (a TensorRT engine: output cosine >= min_cosine)
        check_task_metric     |metric(engine) - metric(simulated)| <= engine_tolerance and
                              metric(FP32) - metric(simulated) <= int8_budget
        check_min_metric      metric(engine) >= min_metric
        check_fidelity        the engine backend vs FP32: agree_top1 >= min_agreement, output cosine >= min_fp32_cosine

The gate is the only place that judges: :func:`gate_evaluation` sets the evaluation's lines and verdict and
the status of every row (a row named by a failing line is ``failed``, with the reason as its note). A new
check is one function ``(Evaluation, GateSpec) -> list[GateLine]`` added to :data:`GATE_CHECKS` (or passed
to :func:`gate_evaluation`). Metric values are in [0, 1], so 0.003 is 0.3 points. ``fx2trt build`` and
``fx2trt validate`` exit with :class:`~fx2trt_pipeline.errors.ExitCode`: 0 pass, 1 gate failed, 2 bad
input, 3 backend unavailable.

Example:
    >>> from fx2trt_pipeline.validate.results import BackendRow, Evaluation
    >>> rows = [BackendRow(k, k, k, {"top1": v}) for k, v in
    ...         [("fp32", 0.80), ("simulated", 0.79), ("network_executor", 0.79)]]
    >>> ev = Evaluation("classification", "top1", rows, "network_executor", "no GPU", 100)
    >>> lines = gate_evaluation(ev, GateSpec(min_cosine=None, engine_tolerance=0.0, int8_budget=0.02))
    >>> ev.passed, round(ev.int8_drop, 4)
    (True, 0.01)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.results import Evaluation

#: A real engine may reorder float accumulations; 0.2 mAP points covers that, not a wrong layer.
DEFAULT_ENGINE_TOLERANCE = 0.002
#: The project's INT8 target: at most 0.3 mAP points below FP32.
DEFAULT_INT8_BUDGET = 0.003
#: Thresholds that may be negative (a negative INT8 budget asks INT8 to beat FP32 by that much).
_SIGNED = ("int8_budget",)


@dataclass(frozen=True)
class GateSpec:
    """Accuracy thresholds (metric values in [0, 1]: 0.003 is 0.3 mAP points); ``None`` disables a check.

    Attributes:
        min_cosine: smallest output cosine of each INT8 backend vs the simulated model (output parity of a
            backend that cannot run region by region, i.e. a TensorRT engine).
        engine_tolerance: largest ``|metric(engine) - metric(simulated)|``.
        int8_budget: largest ``metric(FP32) - metric(simulated INT8)``.
        min_metric: smallest acceptable task metric of the engine backend.
        min_agreement: smallest share of the FP32 model's top-1 predictions the engine backend keeps
            (``agree_top1``; no labels needed).
        min_fp32_cosine: smallest cosine of the engine backend's outputs vs the FP32 model's (class output
            over every item for classifiers, every output of the parity batch otherwise).

    Raises:
        ConfigError: a threshold is not a number (or negative where it cannot be).
    """

    min_cosine: float | None = 0.999
    engine_tolerance: float = DEFAULT_ENGINE_TOLERANCE
    int8_budget: float | None = DEFAULT_INT8_BUDGET
    min_metric: float | None = None
    min_agreement: float | None = None
    min_fp32_cosine: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name != "engine_tolerance":
                continue
            bad = isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
            if bad or (value < 0 and f.name not in _SIGNED):
                kind = "a number" if f.name in _SIGNED else "a non-negative number"
                raise ConfigError(f"gate {f.name} must be {kind} in metric units (0.003 = 0.3 points), got {value!r}")
            object.__setattr__(self, f.name, float(value))


@dataclass(frozen=True)
class GateLine:
    """One check's verdict; prints as ``PASS ...`` / ``FAIL ...``.

    Attributes:
        passed, text: the verdict and what was checked, with its numbers.
        backend: the row this line judges (a failing line marks that row ``failed``); ``None`` for the whole.
        note: the row's note when this line fails it (default: ``text``).
    """

    passed: bool
    text: str
    backend: str | None = None
    note: str = ""

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.text}"


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
            detail = f"tie-aware parity: {row.tie_parity['first_failure_detail']}"
            lines.append(
                GateLine(bool(row.tie_parity["passed"]), f"outputs: {row.tie_parity['summary']}", row.key, detail)
            )
            continue
        if spec.min_cosine is None:
            continue
        cosine = row.cosine_vs_simulated
        ok = cosine is not None and cosine >= spec.min_cosine
        shown = float("nan") if cosine is None else cosine
        text = (
            f"outputs: {row.key} vs simulated cosine {shown:.6f} "
            f"{'>=' if ok else '<'} {spec.min_cosine} on {evaluation.parity_images} images"
        )
        lines.append(GateLine(ok, text, row.key, f"output cosine vs simulated below {spec.min_cosine}"))
    return lines


#: Metrics that are a fraction of samples: one sample moves them by 1 / samples.
_PER_SAMPLE_METRICS = ("top1", "top5")


def _resolution_note(evaluation: Evaluation, budget: float) -> str:
    """Why a per-sample metric on a small set fails any budget finer than one sample (not a verdict change)."""
    n = evaluation.num_samples
    if evaluation.metric not in _PER_SAMPLE_METRICS or n <= 0 or 1.0 / n <= budget:
        return ""
    return (
        f"; on {n} samples one sample moves {evaluation.metric} by {1.0 / n:.4f}, more than the budget: evaluate "
        f"on at least {math.ceil(1.0 / budget)} samples, or set --int8-budget for this set"
    )


def changed_predictions(evaluation: Evaluation) -> str:
    """``"; 5 of 24 predictions changed vs FP32"`` for the engine backend of a classifier (else ``""``).

    Example:
        >>> from fx2trt_pipeline.validate.results import BackendRow
        >>> rows = [BackendRow("network_executor", "", "", {"agree_top1": 19 / 24})]
        >>> changed_predictions(Evaluation("classification", "top1", rows, "network_executor", "", 24))
        '; 5 of 24 predictions changed vs FP32'
    """
    agree = evaluation.value(evaluation.engine_backend or "", "agree_top1")
    n = evaluation.num_samples
    if agree is None or n <= 0:
        return ""
    return f"; {round((1.0 - agree) * n)} of {n} predictions changed vs FP32"


def _finer_than_one_sample(evaluation: Evaluation, budget: float) -> str:
    """Said at PASS too: a budget finer than one sample is met only while no net prediction is lost."""
    n = evaluation.num_samples
    if evaluation.metric not in _PER_SAMPLE_METRICS or n <= 0 or 1.0 / n <= budget or math.isinf(budget):
        return ""
    return (
        f"; the budget {100 * budget:.2f} pt is finer than 1 image of {n} ({100 / n:.2f} pt): one more wrong image "
        "fails it (--min-agreement budgets changed predictions instead)"
    )


def check_task_metric(evaluation: Evaluation, spec: GateSpec) -> list[GateLine]:
    """Engine vs simulated parity and the INT8 budget on the task metric (one line, with the predictions that
    changed vs FP32 and, at PASS too, a budget finer than one sample)."""
    name, backend = evaluation.metric, evaluation.engine_backend
    if name is None or backend is None:
        return []
    fp32, sim, engine = evaluation.value("fp32"), evaluation.value("simulated"), evaluation.value(backend)
    if fp32 is None or sim is None or engine is None:
        return [GateLine(False, f"{name}: missing for fp32, simulated or {backend}; nothing to compare")]
    tol = spec.engine_tolerance
    budget = math.inf if spec.int8_budget is None else spec.int8_budget
    delta, drop = abs(engine - sim), fp32 - sim
    parity = f"engine ({backend}) {engine:.4f} vs simulated {sim:.4f}"
    failures = []
    if not delta <= tol + 1e-12:  # "not <=" also fails NaN
        failures.append(f"{parity}: |delta| {delta:.4f} > tolerance {tol:.4f}")
    if not drop <= budget + 1e-12:
        failures.append(f"INT8 {name} drop fp32 {fp32:.4f} - simulated {sim:.4f} = {drop:.4f} > budget {budget:.4f}")
        failures[-1] += _resolution_note(evaluation, budget)
    changed = changed_predictions(evaluation)
    if failures:
        return [GateLine(False, f"{name}: " + "; ".join(failures) + changed, backend if delta > tol else None)]
    text = (
        f"{name}: {parity} (|delta| {delta:.4f} <= {tol:.4f}); fp32 {fp32:.4f} - simulated {sim:.4f} = "
        f"{drop:.4f} <= budget {budget:.4f}"
    )
    return [GateLine(True, text + changed + _finer_than_one_sample(evaluation, budget))]


def check_min_metric(evaluation: Evaluation, spec: GateSpec) -> list[GateLine]:
    """The engine backend's task metric is at least ``spec.min_metric``."""
    backend = evaluation.engine_backend
    if spec.min_metric is None or evaluation.metric is None or backend is None:
        return []
    value = evaluation.value(backend)
    value = math.nan if value is None else value
    ok = value >= spec.min_metric
    text = f"{evaluation.metric}: {backend} {value:.4f} {'>=' if ok else '<'} minimum {spec.min_metric:.4f}"
    return [GateLine(ok, text)]


def check_fidelity(evaluation: Evaluation, spec: GateSpec) -> list[GateLine]:
    """The engine backend keeps the FP32 model's predictions (``min_agreement``) and outputs (``min_fp32_cosine``)."""
    backend = evaluation.engine_backend
    row = evaluation.row(backend) if backend is not None else None
    if row is None:
        return []
    lines = []
    if spec.min_agreement is not None:
        agree = row.metrics.get("agree_top1")
        if agree is None:
            text = (
                f"agreement: {backend} has no agree_top1 (the class output is not (N, classes) scores; choose it "
                "with --output-index)"
            )
            lines.append(GateLine(False, text, backend))
        else:
            ok = agree >= spec.min_agreement - 1e-12
            kept = round(agree * evaluation.num_samples)
            text = (
                f"agreement: {backend} agree_top1 {agree:.4f} ({kept} of {evaluation.num_samples} predictions as "
                f"FP32) {'>=' if ok else '<'} minimum {spec.min_agreement:.4f}"
            )
            lines.append(GateLine(ok, text, backend))
    if spec.min_fp32_cosine is not None:
        cosine = row.cosine_vs_fp32
        ok = cosine is not None and cosine >= spec.min_fp32_cosine
        shown = math.nan if cosine is None else cosine
        relation = ">=" if ok else "<"
        text = f"fidelity: {backend} output cosine vs FP32 {shown:.6f} {relation} minimum {spec.min_fp32_cosine}"
        lines.append(GateLine(ok, text, backend))
    return lines


#: The checks :func:`gate_evaluation` runs, in order.
GATE_CHECKS: list[GateCheck] = [
    check_engine_ran,
    check_output_parity,
    check_task_metric,
    check_min_metric,
    check_fidelity,
]


def gate_evaluation(
    evaluation: Evaluation, spec: GateSpec, checks: Sequence[GateCheck] | None = None
) -> list[GateLine]:
    """Run every check on ``evaluation``: sets its ``gate_lines``, ``passed`` and each row's status; returns
    the lines. Gating again (other thresholds) judges afresh.

    Example:
        >>> ev = Evaluation("none", None, [], None, "no GPU", 0)
        >>> [str(line) for line in gate_evaluation(ev, GateSpec())], ev.passed
        (['FAIL no INT8 backend besides the simulated model ran (no GPU)'], False)
    """
    lines = [line for check in (GATE_CHECKS if checks is None else checks) for line in check(evaluation, spec)]
    for row in evaluation.rows:
        if row.ran:
            row.status, row.note = "ok", ""
    for line in lines:
        row = evaluation.row(line.backend) if line.backend is not None else None
        if not line.passed and row is not None and row.status != "failed":
            row.status, row.note = "failed", line.note or line.text
    evaluation.gate_lines = [str(line) for line in lines]
    evaluation.passed = all(line.passed for line in lines)
    return lines


def enforce_gate(evaluation: Evaluation, spec: GateSpec | None = None) -> Evaluation:
    """Gate ``evaluation`` (again, with ``spec`` when given) and raise
    :class:`~fx2trt_pipeline.errors.AccuracyGateError` naming every failed line unless it passes.

    Example:
        >>> enforce_gate(validate_classifier(model, qgm, data), GateSpec(int8_budget=0.01))  # doctest: +SKIP
    """
    if spec is not None:
        gate_evaluation(evaluation, spec)
    return evaluation.raise_for_failure()


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
    "GateSpec",
    "changed_predictions",
    "check_engine_ran",
    "check_fidelity",
    "check_min_metric",
    "check_output_parity",
    "check_task_metric",
    "enforce_gate",
    "extend_gate",
    "gate_evaluation",
]
