"""The plan parts of ``fx2trt build``: placement by plan cost, the audit of the engine's plan, INT8 vs FP16.

::

    quantize step     place_by_plan_cost   (QuantConfig.placement = "plan-cost") all-INT8 and float plans, the
                                            verified search (plan/placement_search.py), the chosen quantized model
    build engine      audit_engine_plan    the engine's plan (model.plan.layers.json) audited (gate line)
                      compare_plans        TensorRT's FP16 plan of the same model (no Q/DQ) beside the engine's,
                                            estimated per GPU; says when INT8 is estimated slower and where

Each function takes what it needs and returns plain data plus the lines to print; ``pipeline.py`` stores them.

Example:
    >>> lines, facts = compare_plans(engine_plan, fp16_plan, ("L4",), all_int8=None)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from fx2trt_pipeline.engine.engine_builder import plan_at_opt_shape
from fx2trt_pipeline.engine.engine_plan import EnginePlan
from fx2trt_pipeline.engine.options import BuildOptions
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.plan.cost import ESTIMATE_LABEL, estimate, estimates
from fx2trt_pipeline.plan.gpus import DEFAULT_GPUS
from fx2trt_pipeline.quantize.api import convert
from fx2trt_pipeline.quantize.config import QuantConfig

#: Engine layers named when the INT8 plan is estimated slower than FP16.
COSTLIEST = 3
_LABEL = {"float16": "FP16", "float32": "FP32"}


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What every plan here is built with: the engine's inputs, build options and output names."""

    inputs: Sequence[InputSpec]
    options: BuildOptions | None = None
    output_names: Sequence[str] | None = None

    def plan(self, qgm: torch.fx.GraphModule) -> EnginePlan:
        plan = plan_at_opt_shape(qgm, self.inputs, self.options, self.output_names)
        if plan is None:
            raise RuntimeError("TensorRT logged no plan: the build options set profiling_verbosity below DETAILED")
        return plan


def gpus_of(config: QuantConfig) -> tuple[str, ...]:
    return tuple(config.placement_gpus) or DEFAULT_GPUS


def float_reference(prepared: Any, config: QuantConfig, dtype: str = "float16") -> torch.fx.GraphModule:
    """The same model with no Q/DQ at all (BN folded, the same equalized weights), float parts in ``dtype``."""
    return convert(prepared, dataclasses.replace(config, float_dtype=dtype, skip=("*",), placement="rules"))


def place_by_plan_cost(
    prepared: Any, qgm: torch.fx.GraphModule, config: QuantConfig, ctx: BuildContext, quantized_nodes: Sequence[str]
) -> tuple[torch.fx.GraphModule, list[str], dict[str, Any], dict[str, EnginePlan]]:
    """Keep in float the layers whose INT8 form TensorRT's plans say cost more; verified on rebuilt plans.

    Returns the chosen quantized model, the lines to print, the manifest record and the plans built
    (``int8``: TensorRT's rules, ``float``: no Q/DQ in the build's float dtype).
    """
    from fx2trt_pipeline.plan.placement_search import search_placement

    int8_plan = ctx.plan(qgm)
    float_model = float_reference(prepared, config, config.float_dtype)
    float_plan = ctx.plan(float_model)
    built: dict[frozenset[str], torch.fx.GraphModule] = {}

    def keep_only(keep: frozenset[str]) -> QuantConfig:
        dropped = tuple(n for n in quantized_nodes if n not in keep)
        return dataclasses.replace(config, skip=(*config.skip, *dropped), placement="rules")

    def plan_of(keep: frozenset[str]) -> EnginePlan:
        built[keep] = convert(prepared, keep_only(keep))
        return ctx.plan(built[keep])

    search = search_placement(int8_plan, float_plan, list(quantized_nodes), plan_of, gpus_of(config))
    chosen = search.chosen
    if chosen.plan is int8_plan:
        model = qgm
    elif chosen.plan is float_plan:
        model = float_model
    else:
        model = built[frozenset(chosen.keep_int8)]
    lines = [search.choice.summary_line(), "verified on TensorRT's rebuilt plans:", *search.lines()]
    return model, lines, search.to_dict(), {"int8": int8_plan, "float": float_plan}


def _plan_record(plan: EnginePlan, gpus: Sequence[str]) -> dict[str, Any]:
    return {
        **plan.summary(),
        "estimates": estimates(plan, gpus),
        "layers": [layer.to_dict(plan.batch) for layer in plan.layers],
    }


def compare_plans(
    engine_plan: EnginePlan,
    fp16_plan: EnginePlan,
    gpus: Sequence[str],
    all_int8: EnginePlan | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The engine's plan beside TensorRT's FP16 plan of the same model: figures, estimates, a verdict.

    ``all_int8`` is the all-INT8 plan when a placement chose ``engine_plan`` (recorded as ``chosen``).
    """
    rows = {"int8": all_int8 or engine_plan, "fp16": fp16_plan}
    if all_int8 is not None:
        rows["chosen"] = engine_plan
    record = {key: _plan_record(plan, gpus) for key, plan in rows.items()}
    lines = []
    for key, plan in rows.items():
        s, est = record[key], record[key]["estimates"]
        times = ", ".join(f"{g} {est[g] * 1e6:.0f}" for g in gpus)
        lines.append(
            f"{key.upper():<6} plan: {s['engine_layers']:>4} engine layers, {s['bytes_per_item'] / 1e6:7.1f} MB/item, "
            f"{sum(s['macs_per_item_by_dtype'].values()) / 1e9:.2f} GMAC/item; est. µs/item: {times}"
        )
    engine_est, fp16_est = estimates(engine_plan, gpus), record["fp16"]["estimates"]
    slower = [g for g in gpus if engine_est[g] > fp16_est[g]]
    if slower:
        worst = max(slower, key=lambda g: engine_est[g] / fp16_est[g])
        top = estimate(engine_plan, worst).top(COSTLIEST)
        named = "; ".join(
            f"{lay.name} ({lay.type}, {lay.seconds * 1e6:.0f} µs{_nodes(engine_plan, lay.name)})" for lay in top
        )
        lines.append(
            f"the engine is estimated SLOWER than FP16 on {', '.join(slower)} "
            f"(x{engine_est[worst] / fp16_est[worst]:.2f} on {worst}); its costliest layers there: {named}. "
            "Try --placement plan-cost"
        )
    else:
        lines.append(f"the engine is estimated at least as fast as FP16 on {', '.join(gpus)}")
    lines.append(f"({ESTIMATE_LABEL}; TensorRT's plans from the {engine_plan.source}, {engine_plan.library})")
    record["estimate_label"] = ESTIMATE_LABEL
    record["gpus"] = list(gpus)
    record["slower_than_fp16_on"] = slower
    return lines, record


def _nodes(plan: EnginePlan, name: str) -> str:
    layer = next((p for p in plan.layers if p.name == name), None)
    return f", {', '.join(layer.nodes[:2])}" if layer is not None and layer.nodes else ""


__all__ = ["BuildContext", "compare_plans", "float_reference", "gpus_of", "place_by_plan_cost"]
