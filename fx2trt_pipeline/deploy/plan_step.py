"""The plan parts of ``fx2trt build``: placement by plan cost, the lint, the engine plan's audit, INT8 vs FP16.

::

    quantize step   place_for_run     QuantConfig.placement = "plan-cost": all-INT8 and float plans, the verified
                                      search (plan/placement_search.py); the chosen model is what the run builds
    build network   lint_for_run      TensorRT's placement rules on the network (advice)
    build engine    audit_for_run     the engine's plan (model.plan.layers.json) audited (a gate line), then
                    compare_for_run   TensorRT's FP16 plan of the same model (no Q/DQ) beside the engine's,
                                      estimated per GPU; says when INT8 is estimated slower and where

The ``*_for_run`` steps read and write the build's state (``pipeline._Run``); the functions under them
(``place_by_plan_cost``, ``compare_plans``, ``float_reference``) take what they need and return plain data.

Example:
    >>> lines, facts = compare_plans(engine_plan, fp16_plan, ("L4",), all_int8=None)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from fx2trt_pipeline.deploy.steps import MANIFEST_NAME
from fx2trt_pipeline.engine.engine_builder import plan_at_opt_shape
from fx2trt_pipeline.engine.engine_plan import EnginePlan
from fx2trt_pipeline.engine.options import BuildOptions
from fx2trt_pipeline.errors import ConfigError, Fx2TrtError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.plan.cost import ESTIMATE_LABEL, estimate, estimates
from fx2trt_pipeline.plan.gpus import DEFAULT_GPUS
from fx2trt_pipeline.quantize.api import convert
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.quantize.state import get_quant_state

#: Lint findings printed; all are in the manifest and the report.
LINT_LINES = 8
#: Engine layers named when the INT8 plan is estimated slower than FP16.
COSTLIEST = 3


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What every plan here is built with: the engine's inputs, build options and output names."""

    inputs: Sequence[InputSpec]
    options: BuildOptions | None = None
    output_names: Sequence[str] | None = None

    def plan(self, qgm: torch.fx.GraphModule) -> EnginePlan:
        plan = plan_at_opt_shape(qgm, self.inputs, self.options, self.output_names)
        if plan is None:
            raise ConfigError(
                "TensorRT logged no plan of this build: leave BuildOptions.profiling_verbosity ([build] "
                "profiling_verbosity) unset or 'DETAILED'; placement by plan cost and the FP16 comparison read it"
            )
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
    engine_est = record["chosen" if all_int8 is not None else "int8"]["estimates"]
    fp16_est = record["fp16"]["estimates"]
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


# -- the steps of one fx2trt build (``run`` is pipeline._Run) -------------------------------------------


def plan_context(run: Any) -> BuildContext:
    """The engine's inputs, build options and output names, to build other plans of the same model with."""
    names = list(run.config.model.output_names) if run.config.model.output_names else None
    return BuildContext(run.inputs, run.config.build, names)


def place_for_run(run: Any) -> None:
    """Keep in float what TensorRT's plans say INT8 makes slower; the chosen model is what the run builds."""
    config = get_quant_state(run.qgm).config
    nodes = list(get_quant_state(run.qgm).placement.weights)
    run.qgm, lines, record, plans = place_by_plan_cost(run.prepared, run.qgm, config, plan_context(run), nodes)
    run.facts["placement"], run.facts["placement_plans"] = record, plans
    for line in lines:
        run.steps.note(line)


def lint_for_run(run: Any) -> None:
    """TensorRT's documented placement rules, checked on the network before the build (advice, never a failure)."""
    from fx2trt_pipeline.plan.lint import lint_network

    findings = lint_network(run.network)
    chosen = set((run.facts.get("placement") or {}).get("keep_int8", []))
    # a lone INT8 layer that plan-cost placement kept on purpose is its measured choice, not a placement slip
    findings = [f for f in findings if not (f.rule == "small_int8_island" and f.node in chosen)]
    run.facts["lint"] = [dataclasses.asdict(f) | {"line": str(f)} for f in findings]
    if not findings:
        run.steps.note("placement lint: no findings")
    for finding in findings[:LINT_LINES]:
        run.steps.note(str(finding))
    if len(findings) > LINT_LINES:
        run.steps.note(f"... {len(findings) - LINT_LINES} more lint findings in {MANIFEST_NAME}")


def audit_for_run(run: Any) -> None:
    """Audit TensorRT's plan of the engine just built (``run.engine_plan``) against what the network quantizes."""
    from fx2trt_pipeline.engine.engine_plan import plan_path
    from fx2trt_pipeline.plan.audit import audit_plan

    plan, path = run.engine_plan, plan_path(run.artifact.engine_path)
    if plan is None:
        run.steps.note("TensorRT plan: not logged by this build (profiling_verbosity below DETAILED)")
        return
    audit = audit_plan(run.network, plan, run.qgm, float_dtype=get_quant_state(run.qgm).config.float_dtype)
    run.facts["plan"] = {"file": path.name, **plan.to_dict()}
    run.facts["plan_audit"] = audit.to_dict()
    unit = "image" if len(run.inputs[0].shape) == 4 else "item"
    run.steps.note(f"{audit.summary_line()}; {plan.line(unit).split('; ', 1)[1]} ({plan.source}, {path.name})")
    for line in [] if audit.passed else audit.gate_lines():
        run.steps.note(line)
    for note in audit.notes():
        run.steps.note(f"plan: {note}")
    compare_for_run(run, plan)


def compare_for_run(run: Any, plan: EnginePlan) -> None:
    """TensorRT's FP16 plan of the same model beside the engine's (and the all-INT8 one when a placement ran)."""
    config = get_quant_state(run.qgm).config
    built = run.facts.get("placement_plans", {})
    fp16 = built["float"] if config.float_dtype == "float16" and "float" in built else None
    if fp16 is None:
        try:
            fp16 = plan_context(run).plan(float_reference(run.prepared, config, "float16"))
        except Fx2TrtError as exc:  # the comparison is information: it never fails the build
            run.facts["plans"] = {"fp16_error": str(exc).splitlines()[0]}
            run.steps.note(f"FP16 plan for comparison not built: {run.facts['plans']['fp16_error']}")
            return
    lines, record = compare_plans(plan, fp16, gpus_of(config), built.get("int8"))
    run.facts["plans"] = record
    for line in lines:
        run.steps.note(line)


__all__ = [
    "BuildContext",
    "audit_for_run",
    "compare_for_run",
    "compare_plans",
    "float_reference",
    "gpus_of",
    "lint_for_run",
    "place_by_plan_cost",
    "place_for_run",
]
