"""The one evaluation: score runners on a dataset, compare them, gate the result (library and CLI alike).

::

    EvalData (task, dataset or batches, decode_fn, limits, shard)
        │
    fp32 ──────────┐  score_runner: COCO mAP (detection) | top-1/top-5 (labelled classification)
    simulated ─────┤                agreement with FP32: agree_top1/agree_top5 + output cosine (classifiers)
    engine side ───┘  parity batch: output cosine vs simulated, SQNR vs FP32
        │
    Evaluation (rows) ── gate.gate_evaluation(GateSpec) ──> gate lines, passed

Under ``torchrun`` (an initialised ``torch.distributed`` group) each rank scores its shard of the data
(:class:`Shard`) and the predictions are gathered before scoring, so COCO mAP and top-1 are computed once
on the union and equal what one process computes on all the data.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.validate.runners import TorchRunner
    >>> x, y = torch.randn(12, 4), torch.arange(12) % 3
    >>> model = torch.nn.Linear(4, 3).eval()
    >>> runners = {k: TorchRunner(model, ["x"], ["logits"], name=k) for k in ("fp32", "simulated")}
    >>> data = EvalData("classification", batches=[(x, y)], input_name="x")
    >>> ev = evaluate_backends(runners, data, select_backends(Availability({"tensorrt": "no GPU"})), GateSpec())
    >>> ev.row("simulated").metrics["agree_top1"], ev.passed
    (1.0, False)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.backends import Availability, BackendPlan, backend_label, select_backends
from fx2trt_pipeline.validate.compare import Tolerance, compare_outputs
from fx2trt_pipeline.validate.eval_data import PARITY_BATCH, TASK_METRIC, EvalData, Shard
from fx2trt_pipeline.validate.gate import GateSpec, gate_evaluation
from fx2trt_pipeline.validate.metrics import (
    agreement,
    coco_map,
    detector_predictions,
    image_ids_of,
    output_cosine,
    topk_accuracy,
)
from fx2trt_pipeline.validate.results import BackendRow, Evaluation, finite_or_none, json_safe
from fx2trt_pipeline.validate.runners import Runner, TorchRunner
from fx2trt_pipeline.validate.tie_parity import runner_tie_parity

#: FP32 top-1 below this is taken as labels that do not match the outputs, not as the model's accuracy.
IMPLAUSIBLE_TOP1 = 0.1


@dataclass
class Scored:
    """One runner's metrics and, for classifiers, its outputs on every item (for agreement with FP32)."""

    metrics: dict[str, float]
    logits: torch.Tensor | None = None
    seconds: float = 0.0


def _score_detection(runner: Runner, data: EvalData) -> Scored:
    def model_fn(x: torch.Tensor) -> Any:
        return runner.run({data.input_name: x})

    local = detector_predictions(model_fn, data.dataset, data.decode_fn, data.indices(), data.batch_size)
    predictions = [p for part in data.shard.gather(local) for p in part]
    ids = image_ids_of(data.dataset, range(data.count()))
    return Scored({**coco_map(predictions, data.dataset.coco, img_ids=ids), "num_images": float(len(ids))})


def _first_output(outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.as_tensor(next(iter(outputs.values()))).detach().float().cpu()


def _score_outputs(runner: Runner, data: EvalData) -> Scored:
    parts = [(_first_output(runner.run({data.input_name: x})), y) for x, y in data.local_batches()]
    gathered = [p for part in data.shard.gather(parts) for p in part]
    logits = torch.cat([p[0] for p in gathered]).flatten(1)
    metrics = {"num_samples": float(logits.shape[0])}
    labels = [p[1] for p in gathered]
    if data.task == "classification" and labels and all(y is not None for y in labels):
        ks = tuple(k for k in (1, 5) if k <= logits.shape[1]) or (1,)
        metrics.update(topk_accuracy(logits, torch.cat(labels), ks))
    return Scored(metrics, logits)


def _batch_sizes(data: EvalData) -> list[int]:
    """The batch sizes ``runner.run`` gets while scoring ``data`` on this rank."""
    if data.task == "detection":
        n, size = len(data.indices()), int(data.batch_size)
        return sorted({min(n, size), n % size} - {0})
    return sorted({int(x.shape[0]) for x, _ in data.local_batches()})


def score_runner(runner: Runner, data: EvalData) -> Scored:
    """Score one runner on ``data`` (collective under torchrun: every rank calls it).

    A runner with ``warm_up(batch_sizes)`` (an engine) first runs every batch size it will see, so the
    seconds recorded exclude just-in-time compilation.

    Example:
        >>> from fx2trt_pipeline.validate.runners import TorchRunner
        >>> x, y = torch.eye(3), torch.tensor([0, 1, 1])
        >>> runner = TorchRunner(torch.nn.Identity(), ["x"], ["y"])
        >>> score_runner(runner, EvalData("classification", batches=[(x, y)], input_name="x")).metrics
        {'num_samples': 3.0, 'top1': 0.6666666865348816}
    """
    warm_up = getattr(runner, "warm_up", None)
    if callable(warm_up):  # every batch shape compiles (TensorRT-RTX JIT) before the clock starts
        warm_up(_batch_sizes(data))
    start = time.perf_counter()
    scored = _score_detection(runner, data) if data.task == "detection" else _score_outputs(runner, data)
    scored.seconds = round(time.perf_counter() - start, 3)
    return scored


def agreement_metrics(reference: Scored, test: Scored) -> dict[str, float]:
    """Agreement of ``test`` with the FP32 ``reference`` (classifier outputs), plus their output cosine.

    Empty for outputs that are not ``(N, classes)`` logits (e.g. detector heads).
    """
    if reference.logits is None or test.logits is None or reference.logits.shape != test.logits.shape:
        return {}
    if reference.logits.ndim != 2 or reference.logits.shape[1] < 2:
        return {}
    return {**agreement(reference.logits, test.logits), "cosine_fp32": output_cosine(reference.logits, test.logits)}


@dataclass
class _References:
    """What every row is compared with: FP32's scores and both reference models' parity-batch outputs."""

    fp32: Scored
    feeds: dict[str, torch.Tensor]
    fp32_out: dict[str, torch.Tensor]
    simulated_out: dict[str, torch.Tensor]
    qgm: torch.nn.Module | None = None  # the simulated model, for tie-aware parity


def _min_stat(result: Any, attr: str) -> float | None:
    values = [getattr(s, attr) for s in result.outputs]
    return finite_or_none(min(values)) if values else None


def _row(key: str, runner: Runner, data: EvalData, refs: _References, engine_side: bool) -> BackendRow:
    label, runs_on = backend_label(key)
    scored = refs.fp32 if key == "fp32" else score_runner(runner, data)
    row = BackendRow(key, label, runs_on, dict(scored.metrics), scored.seconds, images=data.count())
    if key == "fp32":
        return row
    agree = agreement_metrics(refs.fp32, scored)
    row.cosine_vs_fp32 = agree.pop("cosine_fp32", None)
    row.metrics.update(agree)
    out = runner.run(refs.feeds)
    vs_fp32 = compare_outputs(refs.fp32_out, out, Tolerance(min_cosine=None))
    row.sqnr_vs_fp32 = _min_stat(vs_fp32, "sqnr_db")
    if row.cosine_vs_fp32 is None:
        row.cosine_vs_fp32 = _min_stat(vs_fp32, "cosine")
    if engine_side:
        vs_sim = compare_outputs(
            refs.simulated_out, out, Tolerance(min_cosine=None), ref_name="simulated", test_name=key
        )
        row.cosine_vs_simulated = _min_stat(vs_sim, "cosine")
        report = runner_tie_parity(refs.qgm, runner, refs.feeds) if refs.qgm is not None else None
        row.tie_parity = None if report is None else json_safe(report.to_dict())
    return row


def _progress_line(row: BackendRow) -> str:
    shown = ", ".join(f"{k} {v:.4f}" for k, v in row.metrics.items() if k in ("mAP", "AP50", "top1", "agree_top1"))
    return f"{row.label}: {shown or 'outputs compared'} ({row.seconds:.1f} s)"


def evaluate_backends(
    runners: Mapping[str, Runner],
    data: EvalData,
    plan: BackendPlan,
    gate: GateSpec,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score every runner on ``data``, compare every INT8 runner with FP32 and the simulated model, gate.

    Args:
        runners: ``fp32`` and ``simulated`` (both required) plus the engine-side runners of ``plan``.
        data: what to score on (:class:`EvalData`).
        plan: the engine-side selection (:func:`~fx2trt_pipeline.validate.backends.select_backends`):
            which backend stands for the engine, why, and the skipped ones (shown in the table).
        gate: thresholds (:class:`~fx2trt_pipeline.validate.gate.GateSpec`).
        progress: called with one line per backend.

    Raises:
        ConfigError: ``fp32`` or ``simulated`` is missing.
    """
    if "fp32" not in runners or "simulated" not in runners:
        raise ConfigError("evaluate_backends needs the 'fp32' and 'simulated' runners")
    feeds = data.parity_feeds()
    refs = _References(
        score_runner(runners["fp32"], data),
        feeds,
        runners["fp32"].run(feeds),
        runners["simulated"].run(feeds),
        getattr(runners["simulated"], "module", None),
    )
    rows = []
    for key, runner in runners.items():
        rows.append(_row(key, runner, data, refs, key in plan.names))
        if progress is not None:
            progress(_progress_line(rows[-1]))
    rows += [BackendRow(k, *backend_label(k), status="skipped", note=why) for k, why in plan.skipped.items()]
    engine = next((k for k in plan.names if k in runners), None)
    evaluation = Evaluation(
        data.task,
        data.metric,
        rows,
        engine,
        plan.reason,
        data.count(),
        parity_images=int(next(iter(feeds.values())).shape[0]),
    )
    evaluation.warnings = plausibility_warnings(evaluation)
    gate_evaluation(evaluation, gate)
    for row in evaluation.engine_side:
        if row.tie_parity is not None:
            if not row.tie_parity["passed"]:
                row.status, row.note = "failed", f"tie-aware parity: {row.tie_parity['first_failure_detail']}"
        elif gate.min_cosine is not None and (row.cosine_vs_simulated or 0.0) < gate.min_cosine:
            row.status, row.note = "failed", f"output cosine vs simulated below {gate.min_cosine}"
    return evaluation


def plausibility_warnings(evaluation: Evaluation) -> list[str]:
    """Warnings about numbers that say more about the data than the model (e.g. FP32 top-1 near zero).

    Example:
        >>> row = BackendRow("fp32", "FP32", "PyTorch", {"top1": 0.0})
        >>> plausibility_warnings(Evaluation("classification", "top1", [row], None, "", 20))[0][:34]
        'FP32 top-1 is 0.00 on 20 images: i'
    """
    fp32 = evaluation.row("fp32")
    top1 = None if fp32 is None else fp32.metrics.get("top1")
    if evaluation.metric != "top1" or top1 is None or top1 >= IMPLAUSIBLE_TOP1:
        return []
    return [
        f"FP32 top-1 is {top1:.2f} on {evaluation.num_samples} images: implausibly low for a trained model; the "
        "labels probably do not match the model's outputs (check how the class folders map to outputs, or "
        "give --labels); the agreement with FP32 does not depend on labels"
    ]


class CandidateScorer:
    """``scorer(candidate) -> metrics``: task metrics, agreement with the FP32 model and output cosine.

    The calibrator search and mixed precision score candidates with it; ``cosine_fp32`` (over every
    output for classifiers, over the parity batch otherwise) breaks ties. ``fp32_metrics`` are the FP32
    model's own scores.

    Example:
        >>> x = torch.randn(8, 4)
        >>> fp32 = torch.nn.Linear(4, 3).eval()
        >>> scorer = CandidateScorer(fp32, EvalData("none", batches=[(x, None)], input_name="x"))
        >>> scorer(fp32)["agree_top1"], round(scorer(fp32)["cosine_fp32"], 6)
        (1.0, 1.0)
    """

    def __init__(self, model: torch.nn.Module, data: EvalData) -> None:
        self.data = data
        self.reference = score_runner(TorchRunner(model, [data.input_name], None, name="fp32"), data)
        self.feeds = data.parity_feeds()
        self.reference_out = TorchRunner(model, [data.input_name], None).run(self.feeds)

    @property
    def fp32_metrics(self) -> dict[str, float]:
        """The FP32 model's own metrics."""
        return dict(self.reference.metrics)

    def __call__(self, candidate: torch.nn.Module) -> dict[str, float]:
        runner = TorchRunner(candidate, [self.data.input_name], None, name="candidate")
        scored = score_runner(runner, self.data)
        metrics = {**scored.metrics, **agreement_metrics(self.reference, scored)}
        if "cosine_fp32" not in metrics:
            stats = compare_outputs(self.reference_out, runner.run(self.feeds), Tolerance(min_cosine=None))
            metrics["cosine_fp32"] = _min_stat(stats, "cosine") or 0.0
        return metrics


__all__ = [
    "Availability",
    "EvalData",
    "PARITY_BATCH",
    "Scored",
    "Shard",
    "TASK_METRIC",
    "agreement_metrics",
    "plausibility_warnings",
    "CandidateScorer",
    "evaluate_backends",
    "score_runner",
    "select_backends",
]
