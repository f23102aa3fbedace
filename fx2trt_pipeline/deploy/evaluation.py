"""Accuracy of every backend a build produced, and the gate verdict (``fx2trt build`` / ``validate``).

::

    fp32 (PyTorch) ─┐
    simulated INT8 ─┼─ task metric (mAP / top-1, validate.metrics) ──> AccuracyResult ──> gate.check_parity
    engine side ────┘  output parity vs simulated (validate.compare)  ──────────────────> min-cosine checks
      tensorrt          the engine itself, where a GPU the library supports is present
      network_executor  the converted network definition, executed layer by layer (CPU)
      onnxruntime       the exported QDQ ONNX

The engine side stands in this order: the first backend present is "the engine" for the parity gate
(the colleague-owned :mod:`fx2trt_pipeline.validate.gate`); the reason is recorded, never silent.

Example:
    >>> ev = evaluate_backends(runners, task="detection", dataset=val, max_images=100)   # doctest: +SKIP
    >>> ev.passed, ev.gate_lines                                                         # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fx2trt_pipeline.deploy.config import GateSpec
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.accuracy import AccuracyResult, BackendRun
from fx2trt_pipeline.validate.compare import Tolerance, compare_outputs
from fx2trt_pipeline.validate.gate import check_parity
from fx2trt_pipeline.validate.metrics import evaluate_detector, topk_accuracy
from fx2trt_pipeline.validate.runners import Runner

#: How each backend is labelled in the report.
BACKEND_LABELS = {
    "fp32": ("FP32", "PyTorch (float model)"),
    "simulated": ("INT8 simulated", "PyTorch (reference Q/DQ GraphModule)"),
    "tensorrt": ("INT8 TensorRT engine", "TensorRT runtime on GPU"),
    "network_executor": ("INT8 TensorRT network", "network executor (the built network definition, CPU)"),
    "onnxruntime": ("INT8 QDQ ONNX", "ONNX Runtime CPU"),
}
ENGINE_SIDE = ("tensorrt", "network_executor", "onnxruntime")


class ChunkedRunner:
    """Runs a runner on batches of at most ``max_batch`` (an engine profile's limit) and concatenates."""

    def __init__(self, runner: Runner, max_batch: int) -> None:
        self.runner, self.max_batch, self.name = runner, max(1, int(max_batch)), runner.name

    def run(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs by name for the whole batch (CPU tensors)."""
        n = next(iter(feeds.values())).shape[0]
        parts: list[dict[str, torch.Tensor]] = []
        for start in range(0, n, self.max_batch):
            chunk = {k: v[start : start + self.max_batch] for k, v in feeds.items()}
            parts.append({k: v.detach().float().cpu() for k, v in self.runner.run(chunk).items()})
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@dataclass
class BackendRow:
    """One row of the accuracy table."""

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


@dataclass
class Evaluation:
    """Everything the validate step found; ``passed`` is the gate verdict."""

    task: str
    metric: str | None
    rows: list[BackendRow]
    engine_backend: str | None
    engine_reason: str
    num_samples: int
    gate_lines: list[str]
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the run manifest)."""
        return {
            **{k: v for k, v in asdict(self).items() if k != "rows"},
            "rows": [asdict(r) for r in self.rows],
        }


#: Stands for an infinite SQNR (identical outputs) in JSON, which has no Infinity; the report shows it as ∞.
SQNR_EXACT = 999.0


def _finite(value: float) -> float | None:
    if value is None or math.isnan(value):
        return None
    return SQNR_EXACT if math.isinf(value) and value > 0 else float(value)


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


def _min_stat(result: Any, attr: str) -> float | None:
    values = [getattr(s, attr) for s in result.outputs]
    return _finite(min(values)) if values else None


def score_task(
    task: str,
    runner: Runner,
    input_name: str,
    dataset: Any,
    batches: Sequence[Any],
    max_images: int | None,
    batch_size: int,
    decode_fn: Any,
) -> dict[str, float]:
    """Task metrics of one runner: COCO mAP (detection), top-k (classification), nothing for ``none``."""
    if task == "detection":
        return evaluate_detector(
            lambda x: runner.run({input_name: x}),
            dataset,
            decode_fn=decode_fn,
            batch_size=batch_size,
            max_images=max_images,
        )
    if task == "classification":
        logits, labels = [], []
        for x, y in batches:
            out = runner.run({input_name: x})
            logits.append(next(iter(out.values())).detach().float().cpu())
            labels.append(y)
        stacked = torch.cat(logits)
        ks = tuple(k for k in (1, 5) if k <= stacked.shape[1]) or (1,)
        return {**topk_accuracy(stacked, torch.cat(labels), ks), "num_samples": float(stacked.shape[0])}
    return {}


def evaluate_backends(
    runners: Mapping[str, Runner],
    *,
    task: str,
    feeds: Mapping[str, torch.Tensor],
    gate: GateSpec,
    engine_reason: str,
    dataset: Any = None,
    batches: Sequence[Any] = (),
    max_images: int | None = None,
    batch_size: int = 50,
    decode_fn: Any = None,
    skipped: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score every runner on the task and compare every INT8 runner's outputs with the simulated model.

    Args:
        runners: ``fp32`` and ``simulated`` (both required) plus engine-side runners by backend name.
        task: ``detection`` | ``classification`` | ``none`` (outputs compared only).
        feeds: one batch of inputs by name for the output comparisons.
        gate: thresholds.
        engine_reason: why the first engine-side runner stands for the engine.
        dataset: COCO-style dataset (detection); batches: ``(inputs, labels)`` (classification).
        max_images, batch_size, decode_fn: forwarded to the detector evaluation.
        skipped: backends that could not run here, with the reason (shown in the table).
        progress: called with one line per backend.

    Raises:
        ConfigError: ``fp32`` or ``simulated`` is missing, or a multi-input model with a task metric.
    """
    if "fp32" not in runners or "simulated" not in runners:
        raise ConfigError("evaluate_backends needs the 'fp32' and 'simulated' runners")
    if task != "none" and len(feeds) != 1:
        raise ConfigError(
            f"Task metrics need a single-input model; this one has inputs {list(feeds)}. "
            "Use task = 'none' (output comparisons only)."
        )
    input_name = next(iter(feeds))
    outputs = {key: runner.run(feeds) for key, runner in runners.items()}
    engine_side = [k for k in ENGINE_SIDE if k in runners]
    rows: list[BackendRow] = []
    runs: dict[str, BackendRun] = {}
    for key, runner in runners.items():
        label, runs_on = BACKEND_LABELS.get(key, (key, key))
        row = BackendRow(key, label, runs_on)
        start = time.perf_counter()
        row.metrics = {
            k: float(v)
            for k, v in score_task(
                task, runner, input_name, dataset, batches, max_images, batch_size, decode_fn
            ).items()
        }
        row.seconds = round(time.perf_counter() - start, 3)
        runs[key] = BackendRun(key, row.metrics, row.seconds)
        if key != "fp32":
            vs_fp32 = compare_outputs(outputs["fp32"], outputs[key], Tolerance(min_cosine=None))
            row.sqnr_vs_fp32, row.cosine_vs_fp32 = _min_stat(vs_fp32, "sqnr_db"), _min_stat(vs_fp32, "cosine")
        if key in engine_side:
            parity = compare_outputs(
                outputs["simulated"],
                outputs[key],
                Tolerance(min_cosine=gate.min_cosine),
                ref_name="simulated",
                test_name=key,
            )
            row.cosine_vs_simulated = _min_stat(parity, "cosine")
            if not parity:
                row.status, row.note = "failed", "; ".join(parity.failures)
        rows.append(row)
        if progress is not None:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.metrics.items() if k in ("mAP", "AP50", "top1"))
            progress(f"{label}: {shown or 'outputs compared'} ({row.seconds:.1f} s)")
    for key, reason in (skipped or {}).items():
        label, runs_on = BACKEND_LABELS.get(key, (key, key))
        rows.append(BackendRow(key, label, runs_on, status="skipped", note=reason))
    return _verdict(task, rows, runs, engine_side, engine_reason, gate)


def _verdict(
    task: str,
    rows: list[BackendRow],
    runs: dict[str, BackendRun],
    engine_side: list[str],
    engine_reason: str,
    gate: GateSpec,
) -> Evaluation:
    lines: list[str] = []
    passed = True
    for row in rows:
        if row.key in engine_side and gate.min_cosine is not None:
            ok = row.status != "failed"
            passed &= ok
            lines.append(
                f"{'PASS' if ok else 'FAIL'} outputs: {row.key} vs simulated cosine "
                f"{row.cosine_vs_simulated if row.cosine_vs_simulated is not None else float('nan'):.6f} "
                f"{'>=' if ok else '<'} {gate.min_cosine}" + ("" if ok else f" ({row.note})")
            )
    metric = {"detection": "mAP", "classification": "top1"}.get(task)
    num_samples = int(
        next(
            (r.metrics.get("num_images", r.metrics.get("num_samples", 0)) for r in rows if r.key == "fp32"), 0
        )
    )
    engine = engine_side[0] if engine_side else None
    if metric is not None:
        result = AccuracyResult(task, metric, runs, engine, engine_reason, num_samples)
        verdict = check_parity(
            result, gate.engine_tolerance, math.inf if gate.int8_budget is None else gate.int8_budget
        )
        passed &= bool(verdict)
        lines.append(verdict.reason)
        if gate.min_metric is not None and engine is not None:
            value = result.value(engine, metric) or math.nan
            ok = value >= gate.min_metric
            passed &= ok
            lines.append(
                f"{'PASS' if ok else 'FAIL'} {metric}: {engine} {value:.4f} "
                f"{'>=' if ok else '<'} minimum {gate.min_metric:.4f}"
            )
    if engine is None:
        passed = False
        lines.append(f"FAIL no INT8 backend besides the simulated model ran ({engine_reason})")
    return Evaluation(task, metric, rows, engine, engine_reason, num_samples, lines, passed)


__all__ = [
    "SQNR_EXACT",
    "json_safe",
    "BACKEND_LABELS",
    "BackendRow",
    "ChunkedRunner",
    "ENGINE_SIDE",
    "Evaluation",
    "evaluate_backends",
    "score_task",
]
