"""The automatic choices of ``fx2trt build``: ``--calibrator auto`` and ``--mixed-precision BUDGET``.

::

    evaluation images ── split_alternate ──> choose half (even-numbered)  -> CandidateScorer
                                             report half (odd-numbered)   -> the validate step's rows
    rank: agreement with FP32 (class scores), output cosine with FP32, then top-1 / mAP (labels break ties)
    calibrate once ─ every calibrator converted and scored ─> best ─ mixed precision (fewest float layers
                                                                        within BUDGET of FP32's predictions)

Choosing and reporting on the same few images is optimistic (24 photos: a calibrator whose top-1 beat FP32 by
8 points through label noise was chosen while it changed the most predictions), so the choice is made on one
half, ranked by fidelity to the FP32 model, and the gate reports the other half. The console and the manifest
(``calibrator_search.note``, ``mixed_precision.note``, ``evaluation.data_note``) say so.

Example:
    >>> qgm = quantize_for_run(run)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from fx2trt_pipeline.deploy.evaluate_run import EvalRequest, eval_data_for
from fx2trt_pipeline.quantize.api import convert


def _split_note(choose: int, total: int, report: int) -> str:
    return (
        f"chosen on {choose} of {total} evaluation images (the even-numbered ones); the validate step reports on "
        f"the other {report}"
    )


def quantize_for_run(run: Any) -> torch.fx.GraphModule:
    """The run's quantized model: the configured calibrator, or the best by fidelity; then mixed precision.

    Records ``calibrator_search`` / ``mixed_precision`` in ``run.facts`` and prints one line per candidate.
    """
    from fx2trt_pipeline.tune.calibrator_search import compare_calibrators, fidelity_order
    from fx2trt_pipeline.validate.eval_data import split_alternate
    from fx2trt_pipeline.validate.scoring import CandidateScorer

    cfg, say = run.config, run.steps.note
    if not cfg.search_calibrator and cfg.mixed_precision is None:
        return convert(run.prepared)
    data = eval_data_for(EvalRequest(cfg, run.eval_ds, fallback=run.batches[0]), run.model, run.inputs[0].name)
    choose, report = split_alternate(data)
    scorer = CandidateScorer(run.model, choose)
    order = fidelity_order(scorer.classifies, data.metric)
    note = _split_note(choose.count(), data.count(), report.count())
    say(f"{note}; ranked by {', then '.join(order)}")
    config = cfg.quant
    if cfg.search_calibrator:
        table = compare_calibrators(
            run.prepared,
            scorer,
            metric=order[0],
            tie_breakers=order[1:],
            base_config=cfg.quant,
            fp32_metrics=scorer.fp32_metrics,
        )
        table.note = note
        for row in table.rows:
            say(f"{row.choice.label:<16} {row.summary(order[0])} ({row.seconds:.1f} s)")
        run.facts["calibrator_search"] = table.to_dict()
        config = table.best.config(cfg.quant)
    if cfg.mixed_precision is None:
        return convert(run.prepared, config)
    return _mixed_precision(run, scorer, order[0], config, note)


def _mixed_precision(run: Any, scorer: Any, metric: str, config: Any, note: str) -> torch.fx.GraphModule:
    from fx2trt_pipeline.tune.mixed_precision import mixed_precision_search

    budget = float(run.config.mixed_precision)
    run.steps.note(f"mixed precision: keep {metric} within {budget:g} of FP32's (1.0)")
    result = mixed_precision_search(
        run.model,
        run.prepared,
        scorer,
        budget,
        metric=metric,
        config=config,
        calib_batches=run.batches,
        fp32_metric=1.0,  # the FP32 model agrees with itself: agree_top1 and cosine_fp32 are 1
    )
    verdict = "budget met" if result.met_budget else f"budget NOT met ({result.note})"
    run.steps.note(
        f"mixed precision: {len(result.float_layers)} layer(s) in float {result.float_layers}: {metric} "
        f"{result.int8:.4f} -> {result.final:.4f}, {verdict}; {result.evaluations} evaluations"
    )
    run.facts["mixed_precision"] = {**result.to_dict(), "held_out": note}
    return result.model


__all__ = ["quantize_for_run"]
