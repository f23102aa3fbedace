"""The one evaluation: score runners on a dataset, compare them, gate the result (library and CLI alike).

::

    EvalData (task, dataset or batches, decode_fn, limits, shard)
        │
    fp32 ──────────┐  score_runner (scoring.py): COCO mAP (detection) | top-1/top-5 of the class output;
    simulated ─────┤                agreement with FP32: agree_top1/agree_top5 + output cosine (classifiers)
    engine side ───┘  parity batch (the first images, kept while scoring): every output's cosine and max
                      error vs FP32 and vs simulated, SQNR vs FP32; tie-aware parity (one simulated run shared)
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
from fx2trt_pipeline.validate.compare import Tolerance, compare_outputs, format_table
from fx2trt_pipeline.validate.eval_data import PARITY_BATCH, TASK_METRIC, EvalData, Shard, split_alternate
from fx2trt_pipeline.validate.gate import GateSpec, gate_evaluation
from fx2trt_pipeline.validate.results import BackendRow, Evaluation, finite_or_none, json_safe
from fx2trt_pipeline.validate.runners import Runner
from fx2trt_pipeline.validate.scoring import CandidateScorer, Scored, agreement_metrics, class_output, score_runner
from fx2trt_pipeline.validate.tie_parity import TieReference, region_backend, runner_tie_parity

#: FP32 top-1 below this is taken as labels that do not match the outputs, not as the model's accuracy.
IMPLAUSIBLE_TOP1 = 0.1


@dataclass
class _References:
    """What every row is compared with: FP32's scores and both reference models' parity-batch outputs."""

    fp32: Scored
    feeds: dict[str, torch.Tensor]
    fp32_out: dict[str, torch.Tensor]
    simulated_out: dict[str, torch.Tensor] | None = None
    qgm: torch.fx.GraphModule | None = None  # the simulated model, for tie-aware parity
    tie: TieReference | None = None  # its run on the parity batch, made once for every backend


def _min_stat(result: Any, attr: str) -> float | None:
    values = [getattr(s, attr) for s in result.outputs]
    return finite_or_none(min(values)) if values else None


def _output_rows(vs_fp32: Any, vs_sim: Any | None) -> list[dict[str, Any]]:
    """Every output's cosine and max abs error vs FP32 (and vs the simulated model for engine-side rows)."""
    sim = {s.name: s for s in vs_sim.outputs} if vs_sim is not None else {}
    rows = []
    for s in vs_fp32.outputs:
        o = sim.get(s.name)
        rows.append(
            {
                "name": s.name,
                "shape": list(s.shape),
                "cosine_vs_fp32": finite_or_none(s.cosine),
                "max_abs_vs_fp32": finite_or_none(s.max_abs_error),
                "cosine_vs_simulated": None if o is None else finite_or_none(o.cosine),
                "max_abs_vs_simulated": None if o is None else finite_or_none(o.max_abs_error),
            }
        )
    return rows


def _row(
    key: str, runner: Runner, data: EvalData, refs: _References, engine_side: bool, say: Callable[[str], None]
) -> BackendRow:
    label, runs_on = backend_label(key)
    items = int(next(iter(refs.feeds.values())).shape[0])
    scored = refs.fp32 if key == "fp32" else score_runner(runner, data, parity_items=items)
    row = BackendRow(key, label, runs_on, dict(scored.metrics), scored.seconds, images=data.count())
    if key == "fp32":
        return row
    start = time.perf_counter()
    agree = agreement_metrics(refs.fp32, scored)
    row.cosine_vs_fp32 = agree.pop("cosine_fp32", None)
    row.metrics.update(agree)
    out = scored.first if scored.first is not None else runner.run(refs.feeds)
    vs_fp32 = compare_outputs(refs.fp32_out, out, Tolerance(min_cosine=None))
    row.sqnr_vs_fp32 = _min_stat(vs_fp32, "sqnr_db")
    if row.cosine_vs_fp32 is None:
        row.cosine_vs_fp32 = _min_stat(vs_fp32, "cosine")
    vs_sim = None
    if key == "simulated":
        refs.simulated_out = out
    elif engine_side and refs.simulated_out is not None:
        vs_sim = compare_outputs(
            refs.simulated_out, out, Tolerance(min_cosine=None), ref_name="simulated", test_name=key
        )
        row.cosine_vs_simulated = _min_stat(vs_sim, "cosine")
        if refs.qgm is not None and region_backend(runner) is not None:
            say(f"{label}: tie-aware parity on {items} images, quantize layer by quantize layer")
            if refs.tie is None:
                names = getattr(runner, "input_names", None) or list(refs.feeds)
                refs.tie = TieReference(refs.qgm, [refs.feeds[n] for n in names])
            report = runner_tie_parity(refs.qgm, runner, refs.feeds, reference=refs.tie, free_outputs=out)
            row.tie_parity = None if report is None else json_safe(report.to_dict())
    row.outputs = _output_rows(vs_fp32, vs_sim)
    row.parity_seconds = round(time.perf_counter() - start, 3)
    return row


def _progress_line(row: BackendRow) -> str:
    shown = ", ".join(f"{k} {v:.4f}" for k, v in row.metrics.items() if k in ("mAP", "AP50", "top1", "agree_top1"))
    timing = f"scored in {row.seconds:.1f} s" + (
        f", compared in {row.parity_seconds:.1f} s" if row.parity_seconds else ""
    )
    return f"{row.label}: {shown or 'outputs compared'} ({timing})"


def output_table(evaluation: Evaluation) -> str:
    """Every output of every INT8 row vs FP32 (cosine, max abs error) and vs the simulated model, as text."""
    lines = []
    for row in evaluation.rows:
        for o in row.outputs if row.ran else []:
            sim = "-" if o["cosine_vs_simulated"] is None else f"{o['cosine_vs_simulated']:.6f}"
            sim_abs = "-" if o["max_abs_vs_simulated"] is None else f"{o['max_abs_vs_simulated']:.3g}"
            cos = "-" if o["cosine_vs_fp32"] is None else f"{o['cosine_vs_fp32']:.6f}"
            err = "-" if o["max_abs_vs_fp32"] is None else f"{o['max_abs_vs_fp32']:.3g}"
            shape = "x".join(str(d) for d in o["shape"])
            lines.append((row.key, o["name"], shape, cos, err, sim, sim_abs))
    if not lines:
        return ""
    head = ("backend", "output", "shape", "cosine vs FP32", "max abs vs FP32", "cosine vs simulated", "max abs vs sim")
    return f"outputs vs FP32 and vs simulated on {evaluation.parity_images} images:\n" + format_table(head, lines)


def evaluate_backends(
    runners: Mapping[str, Runner],
    data: EvalData,
    plan: BackendPlan,
    gate: GateSpec,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score every runner on ``data``, compare every INT8 runner with FP32 and the simulated model, gate.

    Args:
        runners: ``fp32`` and ``simulated`` (both required, in that order first) plus the engine-side runners
            of ``plan``.
        data: what to score on (:class:`EvalData`).
        plan: the engine-side selection (:func:`~fx2trt_pipeline.validate.backends.select_backends`):
            which backend stands for the engine, why, and the skipped ones (shown in the table).
        gate: thresholds (:class:`~fx2trt_pipeline.validate.gate.GateSpec`).
        progress: called with a line before each phase and one line per backend (``None``: quiet).

    Raises:
        ConfigError: ``fp32`` or ``simulated`` is missing.
    """
    if "fp32" not in runners or "simulated" not in runners:
        raise ConfigError("evaluate_backends needs the 'fp32' and 'simulated' runners")
    say = progress or (lambda line: None)
    feeds = data.parity_feeds()
    items = int(next(iter(feeds.values())).shape[0])
    say(f"scoring FP32 on {data.count()} images")
    fp32 = score_runner(runners["fp32"], data, parity_items=items)
    refs = _References(fp32, feeds, fp32.first if fp32.first is not None else runners["fp32"].run(feeds))
    qgm = getattr(runners["simulated"], "module", None)
    refs.qgm = qgm if isinstance(qgm, torch.fx.GraphModule) else None
    ordered = ["fp32", "simulated", *(k for k in runners if k not in ("fp32", "simulated"))]
    rows = []
    for key in ordered:
        if key != "fp32":
            say(f"scoring {backend_label(key)[0]} on {data.count()} images")
        rows.append(_row(key, runners[key], data, refs, key in plan.names, say))
        say(_progress_line(rows[-1]))
    rows += [BackendRow(k, *backend_label(k), status="skipped", note=why) for k, why in plan.skipped.items()]
    engine = next((k for k in plan.names if k in runners), None)
    evaluation = Evaluation(data.task, data.metric, rows, engine, plan.reason, data.count(), parity_images=items)
    evaluation.warnings = plausibility_warnings(evaluation)
    gate_evaluation(evaluation, gate)
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


__all__ = [
    "Availability",
    "CandidateScorer",
    "EvalData",
    "PARITY_BATCH",
    "Scored",
    "Shard",
    "TASK_METRIC",
    "agreement_metrics",
    "class_output",
    "evaluate_backends",
    "output_table",
    "plausibility_warnings",
    "score_runner",
    "select_backends",
    "split_alternate",
]
