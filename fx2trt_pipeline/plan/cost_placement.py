"""Placement by plan cost: keep INT8 only where TensorRT's INT8 plan is estimated cheaper than its float plan.

For each quantizable node present in both plans (the INT8 plan names its compute layers; the float plan's
fused ones are matched by :func:`~fx2trt_pipeline.plan.cost.match_compute_layers`), the node's cost in each
plan (:func:`~fx2trt_pipeline.plan.cost.node_costs`: its conv / gemm kernel plus the epilogue, expansion and
prologue kernels it brings) is estimated on every named GPU. **Rule: a node stays INT8 only when its INT8
cost is strictly lower on every named GPU**; otherwise it goes to float (a tie goes to float, which is
the more accurate of the two at equal cost).

This is a greedy first step, node by node: layers interact (a conv kept in float changes its neighbours'
Q/DQ, so their epilogues change too), so the chosen placement must be rebuilt and its real plan compared.
All of it is an estimate from TensorRT's plans, never a measurement.

Example:
    >>> from fx2trt_pipeline.engine.engine_plan import EnginePlan, PlanLayer, PlanTensor
    >>> t = lambda name, dtype: PlanTensor(name, (1, 16, 8, 8), dtype)
    >>> w = lambda dtype: (PlanTensor("w", (16, 16, 3, 3), dtype),)
    >>> int8 = EnginePlan((PlanLayer("conv_U1", "correlation", (t("q", "Int8"),), (t("y", "Float"),), w("Int8"),
    ...                              nodes=("conv",)),
    ...                    PlanLayer("__myl_MulAddRelu_myl0_2", "kgen", (t("y", "Float"),), (t("z", "Int8"),))))
    >>> fp16 = EnginePlan((PlanLayer("__myl_CorrMulAddRelu_myl0_1", "runtime_fusion", (t("x", "Half"),),
    ...                              (t("z", "Half"),), w("Half")),))
    >>> choice = choose_placement(int8, fp16, ["L4", "A10"])
    >>> choice.keep_int8, choice.keep_float
    ((), ('conv',))
    >>> print(choice.summary_line())
    FP16 is estimated faster for every layer: this would not be an INT8 engine (estimate from TensorRT's plan
    (roofline on datasheet peaks), not a measurement; GPUs: L4, A10)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fx2trt_pipeline.engine.engine_plan import EnginePlan
from fx2trt_pipeline.plan.cost import ESTIMATE_LABEL, match_compute_layers, node_costs
from fx2trt_pipeline.plan.gpus import DEFAULT_GPUS
from fx2trt_pipeline.plan.gpus import gpu as gpu_named

_DTYPE_LABEL = {"Half": "FP16", "Float": "FP32", "BFloat16": "BF16", "BF16": "BF16"}
_INT_DTYPES = ("Int8", "FP8", "Int4", "FP4")


@dataclass(frozen=True)
class NodeChoice:
    """One node's decision and why: its bytes per item and estimated seconds per item per GPU in each plan."""

    node: str
    keep: str  # "int8" or "float"
    int8_bytes: float
    float_bytes: float
    int8_kernels: int
    float_kernels: int
    int8_seconds: dict[str, float]
    float_seconds: dict[str, float]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class PlacementChoice:
    """What plan-cost placement keeps INT8 and in float, per node, on the named GPUs.

    Attributes:
        keep_int8, keep_float: FX nodes, in the INT8 plan's order.
        rows: one :class:`NodeChoice` per compared node.
        unmatched: INT8 compute nodes with no counterpart in the float plan (left as they are).
        gpus: the GPUs the rule was applied on.
        float_dtype: the float plan's compute dtype as people say it (``FP16``, ``FP32``).
        label: the estimate's label (from TensorRT's plans, not a measurement).
    """

    keep_int8: tuple[str, ...]
    keep_float: tuple[str, ...]
    rows: tuple[NodeChoice, ...]
    unmatched: tuple[str, ...]
    gpus: tuple[str, ...]
    float_dtype: str
    label: str = ESTIMATE_LABEL

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep_int8": list(self.keep_int8),
            "keep_float": list(self.keep_float),
            "unmatched": list(self.unmatched),
            "gpus": list(self.gpus),
            "float_dtype": self.float_dtype,
            "label": self.label,
            "summary": self.summary_line(),
            "rows": [r.to_dict() for r in self.rows],
        }

    def summary_line(self) -> str:
        """One line for the console; says plainly when no layer would stay INT8."""
        on = f"({self.label}; GPUs: {', '.join(self.gpus)})"
        n = len(self.rows)
        if n == 0:
            return f"plan-cost placement: no quantizable layer is found in both plans {on}"
        if not self.keep_int8:
            return f"{self.float_dtype} is estimated faster for every layer: this would not be an INT8 engine {on}"
        if not self.keep_float:
            return f"INT8 is estimated faster than {self.float_dtype} for every one of {n} layers {on}"
        return (
            f"plan-cost placement keeps {len(self.keep_int8)}/{n} layers INT8 and {len(self.keep_float)} in "
            f"{self.float_dtype}, where INT8 is not estimated faster on every GPU {on}"
        )


def float_dtype_label(plan: EnginePlan) -> str:
    """The float plan's usual compute dtype as people say it: ``FP16`` for ``Half``, ``FP32`` for ``Float``."""
    dtypes = Counter(layer.compute_dtype for layer in plan.layers if layer.compute_kind)
    dtypes.pop(None, None)
    common = dtypes.most_common(1)[0][0] if dtypes else "Float"
    return _DTYPE_LABEL.get(str(common), str(common))


def _reason(keep: str, int8_bytes: float, float_bytes: float, slower: list[str], fdt: str) -> str:
    size = f"INT8 moves {int8_bytes / 1e6:.2f} MB vs {float_bytes / 1e6:.2f} MB in {fdt}"
    if keep == "int8":
        return f"{size}; INT8 estimated faster on every GPU"
    return f"{size}; INT8 estimated no faster on {', '.join(slower)}"


def choose_placement(
    int8_plan: EnginePlan, float_plan: EnginePlan, gpu_names: Sequence[str] = DEFAULT_GPUS
) -> PlacementChoice:
    """Per node in both plans: INT8 where its INT8 cost is strictly lower on every GPU in ``gpu_names``, else float.

    Args:
        int8_plan: TensorRT's plan of the quantized network (its compute layers carry FX node names).
        float_plan: TensorRT's plan of the same model without Q/DQ (FP16 or FP32, at the same batch).
        gpu_names: GPUs of :data:`~fx2trt_pipeline.plan.gpus.GPUS` the rule must hold on.

    Returns:
        The :class:`PlacementChoice`; a greedy first step: rebuild the placement and compare its real plan.

    Raises:
        ConfigError: an unknown GPU name.
    """
    gpus = tuple(gpu_named(g).name for g in gpu_names)
    names = match_compute_layers(int8_plan, float_plan)
    int8_costs = {g: node_costs(int8_plan, g) for g in gpus}
    float_costs = {g: node_costs(float_plan, g, names) for g in gpus}
    fdt = float_dtype_label(float_plan)
    rows, unmatched = [], []
    for node, first in int8_costs[gpus[0]].items() if gpus else ():
        if not any(d in first.compute_dtype for d in _INT_DTYPES):
            continue  # runs in float in the INT8 plan already: nothing to choose
        if node not in float_costs[gpus[0]]:
            unmatched.append(node)
            continue
        i8 = {g: int8_costs[g][node].seconds for g in gpus}
        fl = {g: float_costs[g][node].seconds for g in gpus}
        slower = [g for g in gpus if i8[g] >= fl[g]]
        keep = "float" if slower else "int8"
        fcost = float_costs[gpus[0]][node]
        rows.append(NodeChoice(node, keep, first.bytes, fcost.bytes, len(first.kernels), len(fcost.kernels), i8, fl,
                               _reason(keep, first.bytes, fcost.bytes, slower, fdt)))  # fmt: skip
    return PlacementChoice(
        tuple(r.node for r in rows if r.keep == "int8"),
        tuple(r.node for r in rows if r.keep == "float"),
        tuple(rows),
        tuple(unmatched),
        gpus,
        fdt,
    )


__all__ = ["NodeChoice", "PlacementChoice", "choose_placement", "float_dtype_label"]
