"""Placement by plan cost, verified: every candidate placement is rebuilt and judged on TensorRT's real plan.

::

    all-INT8 plan, float plan ── choose_placement (per node, greedy) ──> keep-INT8 set K
    candidates, each built by ``plan_of(keep_int8)`` and estimated on every named GPU:
        K, then K without its least profitable node, without the two least profitable, ... (up to max_rebuilds)
        plus the all-INT8 and the all-float plans already built
    score = max over GPUs of  estimate(candidate) / min(estimate(all-INT8), estimate(float))
    chosen = the first candidate (in that order) with score <= 1, else the lowest score

Layers interact (keeping a conv in float moves its neighbours' Q/DQ and epilogues), so the per-node choice alone
can be slower than both extremes: the candidates are judged by their own rebuilt plans. The estimate is a roofline
over TensorRT's plan on datasheet peaks (:mod:`fx2trt_pipeline.plan.cost`), never a measurement.

Example:
    >>> from fx2trt_pipeline.engine.engine_plan import EnginePlan, PlanLayer, PlanTensor
    >>> t = lambda name, dtype: PlanTensor(name, (1, 16, 8, 8), dtype)
    >>> w = lambda dtype: (PlanTensor("w", (16, 16, 3, 3), dtype),)
    >>> int8 = EnginePlan((PlanLayer("conv_U1", "correlation", (t("q", "Int8"),), (t("y", "Float"),), w("Int8"),
    ...                              nodes=("conv",)),
    ...                    PlanLayer("__myl_MulAddRelu_myl0_2", "kgen", (t("y", "Float"),), (t("z", "Int8"),))))
    >>> fp16 = EnginePlan((PlanLayer("__myl_CorrMulAddRelu_myl0_1", "runtime_fusion", (t("x", "Half"),),
    ...                              (t("z", "Half"),), w("Half")),))
    >>> result = search_placement(int8, fp16, ["conv"], lambda keep: int8 if keep else fp16, ["L4"])
    >>> result.chosen.label, result.chosen.keep_int8, result.is_int8_engine
    ('all FP16', (), False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fx2trt_pipeline.engine.engine_plan import EnginePlan
from fx2trt_pipeline.plan.cost import ESTIMATE_LABEL, estimates
from fx2trt_pipeline.plan.cost_placement import PlacementChoice, choose_placement
from fx2trt_pipeline.plan.gpus import DEFAULT_GPUS

#: Rebuilds spent shrinking the greedy set when it is not yet at least as fast as both extremes.
MAX_REBUILDS = 6


@dataclass(frozen=True)
class Candidate:
    """One placement and its real plan: the nodes kept INT8, estimated seconds per item per GPU, its score."""

    label: str
    keep_int8: tuple[str, ...]
    plan: EnginePlan
    seconds: dict[str, float]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "keep_int8": list(self.keep_int8),
            "seconds": self.seconds,
            "score": self.score,
            "summary": self.plan.summary(),
        }


@dataclass(frozen=True)
class PlacementSearch:
    """The per-node choice, every candidate tried and the one chosen."""

    choice: PlacementChoice
    candidates: tuple[Candidate, ...]
    chosen: Candidate
    float_label: str
    gpus: tuple[str, ...]

    @property
    def is_int8_engine(self) -> bool:
        return bool(self.chosen.keep_int8)

    def lines(self) -> list[str]:
        """What the build prints: each candidate's plan and estimate, then the verdict, plainly."""
        out = []
        for c in self.candidates:
            times = ", ".join(f"{g} {c.seconds[g] * 1e6:.0f}" for g in self.gpus)
            s = c.plan.summary()
            out.append(
                f"  {c.label:<40} {len(c.keep_int8):>3} INT8 layers, {s['engine_layers']:>4} engine layers, "
                f"{s['bytes_per_item'] / 1e6:7.1f} MB/item; est. µs/item: {times} "
                f"(x{c.score:.2f} of the faster extreme)"
            )
        if not self.is_int8_engine:
            verdict = (
                f"{self.float_label} is estimated faster than every INT8 placement tried: the engine keeps every layer "
                f"in {self.float_label} (this is not an INT8 engine)"
            )
        else:
            verdict = f"chosen: {self.chosen.label}, {len(self.chosen.keep_int8)} layers kept INT8"
        return [*out, f"{verdict} ({ESTIMATE_LABEL})"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.label,
            "keep_int8": list(self.chosen.keep_int8),
            "is_int8_engine": self.is_int8_engine,
            "gpus": list(self.gpus),
            "label": ESTIMATE_LABEL,
            "candidates": [c.to_dict() for c in self.candidates],
            "per_node": self.choice.to_dict(),
        }


def _profit_order(choice: PlacementChoice) -> list[str]:
    """The greedy set's nodes, least profitable INT8 first (mean relative saving over the GPUs)."""
    rows = {r.node: r for r in choice.rows}

    def saving(node: str) -> float:
        r = rows[node]
        return sum((r.float_seconds[g] - r.int8_seconds[g]) / r.float_seconds[g] for g in r.float_seconds) / max(
            len(r.float_seconds), 1
        )

    return sorted(choice.keep_int8, key=saving)


def search_placement(
    int8_plan: EnginePlan,
    float_plan: EnginePlan,
    quantized_nodes: Sequence[str],
    plan_of: Callable[[frozenset[str]], EnginePlan],
    gpu_names: Sequence[str] = DEFAULT_GPUS,
    max_rebuilds: int = MAX_REBUILDS,
) -> PlacementSearch:
    """Choose which quantized nodes stay INT8, judged on the rebuilt plans.

    Args:
        int8_plan: the plan with every quantizable layer INT8 (TensorRT's rules).
        float_plan: the plan of the same model with no Q/DQ, in the build's float dtype.
        quantized_nodes: the FX nodes the all-INT8 network quantizes (the audit's int8 rows).
        plan_of: builds the plan of a placement that keeps exactly these nodes INT8 (the rest in float).
        gpu_names: the GPUs the estimate is made for.
        max_rebuilds: how many shrunken variants of the greedy set may be built.
    """
    gpus = tuple(gpu_names)
    choice = choose_placement(int8_plan, float_plan, gpus)
    float_label = choice.float_dtype
    base_int8, base_float = estimates(int8_plan, gpus), estimates(float_plan, gpus)
    best = {g: min(base_int8[g], base_float[g]) for g in gpus}

    def candidate(label: str, keep: Sequence[str], plan: EnginePlan) -> Candidate:
        seconds = estimates(plan, gpus)
        return Candidate(label, tuple(keep), plan, seconds, max(seconds[g] / best[g] for g in gpus))

    everything = tuple(quantized_nodes)
    extremes = [
        candidate("all INT8 (TensorRT's rules)", everything, int8_plan),
        candidate(f"all {float_label}", (), float_plan),
    ]
    tried: list[Candidate] = []
    keep = [n for n in everything if n in set(choice.keep_int8) or n in set(choice.unmatched)]
    order = _profit_order(choice)
    for step in range(max_rebuilds + 1):
        if not keep or tuple(keep) == everything:
            break
        label = "per-layer choice" if step == 0 else f"per-layer choice, {step} least profitable dropped"
        tried.append(candidate(label, keep, plan_of(frozenset(keep))))
        if tried[-1].score <= 1.0 or not order:
            break
        dropped = order.pop(0)
        keep = [n for n in keep if n != dropped]
    chosen = next((c for c in tried if c.score <= 1.0), None)
    if chosen is None:  # no mixed placement beats both extremes: take the best of everything tried
        chosen = min([*tried, *extremes], key=lambda c: (round(c.score, 9), len(c.keep_int8)))
    return PlacementSearch(choice, (*extremes, *tried), chosen, float_label, gpus)


__all__ = ["Candidate", "MAX_REBUILDS", "PlacementSearch", "search_placement"]
