"""Precision audit: does every conv / deconv / linear / matmul that the graph quantizes run INT8 in TensorRT's plan?

::

    network (what the graph asked for)            EnginePlan (what TensorRT will run)
      conv: data <- DQ ?  kernel <- DQ ?    ──>     correlation / gemm / deconv layer implementing that FX node:
      int8 | half (one side only) | float           compute dtype of its input: Int8 | Half | Float
                         └────────── AuditRow per network compute layer ──────────┘
      verdict: int8 | FAIL (half-quantized, or quantized yet float in the plan) | float, no INT8 kernel in this
               library (reported, not failed) | float (not quantized: its reason)

The graph side is read from the strongly typed network, not from the FX graph, so the audit judges our graphs,
torch.ao and PT2E graphs and networks from TensorRT's ONNX parser alike; the FX graph only adds reasons for the
layers kept in float. The summary counts come from the plan, so no line claims more INT8 than TensorRT runs.

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
    >>> from fx2trt_pipeline.network.network import network_from_graph_module
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(1, 16, 8, 8)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> spec = [InputSpec("x", (1, 16, 8, 8))]
    >>> builder, network, ctx = network_from_graph_module(qgm, spec, builder=create_builder())
    >>> _, plan = engine_and_plan_from_network(builder, network, spec)
    >>> audit = audit_plan(network, plan, qgm)
    >>> audit.passed, audit.summary_line()
    (True, 'TensorRT plan: 1/1 quantized convs and matmuls run INT8; 0 kept in float')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fx2trt_pipeline.engine.engine_plan import EnginePlan, PlanLayer
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.plan.network_view import LayerInfo, NetworkView
from fx2trt_pipeline.quantize.placement import float_reason
from fx2trt_pipeline.quantize.state import get_quant_state

#: Network LayerTypes that run convolutions and matmuls (the layers INT8 is for).
COMPUTE_LAYER_TYPES = {"CONVOLUTION": "conv", "DECONVOLUTION": "deconv", "MATRIX_MULTIPLY": "matmul"}
#: Compute kinds each library has no INT8 kernel for: TensorRT-RTX plans ConvTranspose as `deconv Float, Float`
#: even with int8 data and weights (measured on 1.7.1); datacenter TensorRT runs INT8 deconvolution.
NO_INT8_KERNEL = {"tensorrt_rtx": {"deconv"}}


@dataclass(frozen=True)
class AuditRow:
    """One network conv / deconv / matmul and what TensorRT's plan does with it.

    Attributes:
        node: the FX node (network layer names start with it).
        layer: the network layer.
        kind: ``conv`` | ``deconv`` | ``matmul``.
        graph: ``int8`` (data and weight quantized), ``half`` (one of them), ``float`` (neither).
        plan_layers: the engine layers implementing it.
        plan_dtype: the dtype the plan computes it in (``Int8``, ``Half``, ``Float``; ``None`` if not found).
        verdict: ``int8`` | ``fail`` | ``no_int8_kernel`` | ``float``.
        reason: why, in one sentence (for a float or failing layer).
    """

    node: str
    layer: str
    kind: str
    graph: str
    plan_layers: tuple[str, ...]
    plan_dtype: str | None
    verdict: str
    reason: str = ""


@dataclass
class PlanAudit:
    """The audit of one build: a row per network compute layer and what else the plan shows."""

    rows: list[AuditRow]
    library: str = ""
    standalone_qdq: list[str] = field(default_factory=list)
    reformats: list[str] = field(default_factory=list)
    float32_layers: list[str] = field(default_factory=list)
    unattributed: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[AuditRow]:
        return [r for r in self.rows if r.verdict == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        quantized = [r for r in self.rows if r.graph != "float"]
        return {
            "quantized": len(quantized),
            "int8_in_plan": sum(1 for r in quantized if r.plan_dtype == "Int8"),
            "failed": len(self.failures),
            "no_int8_kernel": sum(1 for r in self.rows if r.verdict == "no_int8_kernel"),
            "kept_in_float": sum(1 for r in self.rows if r.verdict == "float"),
        }

    def summary_line(self) -> str:
        c = self.counts()
        line = (
            f"TensorRT plan: {c['int8_in_plan']}/{c['quantized']} quantized convs and matmuls run INT8; "
            f"{c['kept_in_float']} kept in float"
        )
        if c["no_int8_kernel"]:
            line += (
                f"; {c['no_int8_kernel']} run in float for want of an INT8 kernel in {self.library or 'this library'}"
            )
        return line

    def gate_lines(self) -> list[str]:
        """``PASS``/``FAIL`` lines in the gate's format: one FAIL per layer TensorRT runs in float by mistake."""
        if self.passed:
            return [f"PASS {self.summary_line()}"]
        return [
            f"FAIL plan audit: {r.kind} {r.node} (engine layer {', '.join(r.plan_layers) or 'not found'}) runs in "
            f"{r.plan_dtype or 'an unknown precision'}: {r.reason}"
            for r in self.failures
        ]

    def notes(self) -> list[str]:
        """What the plan shows besides the verdicts (reported, never failed)."""
        out = [f"{r.kind} {r.node}: {r.reason}" for r in self.rows if r.verdict == "no_int8_kernel"]
        if self.standalone_qdq:
            out.append(f"{len(self.standalone_qdq)} Q/DQ kernels of their own: {', '.join(self.standalone_qdq[:6])}")
        if self.reformats:
            out.append(f"{len(self.reformats)} reformat / copy layers: {', '.join(self.reformats[:6])}")
        if self.float32_layers:
            out.append(f"{len(self.float32_layers)} engine layers with float32 tensors where float16 was asked")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "summary": self.summary_line(),
            "gate_lines": self.gate_lines(),
            "counts": self.counts(),
            "rows": [asdict(r) for r in self.rows],
            "notes": self.notes(),
            "standalone_qdq": self.standalone_qdq,
            "reformats": self.reformats,
            "float32_layers": self.float32_layers,
            "unattributed": self.unattributed,
        }


def _graph_precision(view: NetworkView, layer: LayerInfo) -> tuple[str, str]:
    """``int8`` / ``half`` / ``float`` for a network compute layer, and which side is float when half."""
    data_q, weight_q = view.quantized_inputs(layer)  # weights baked into the kernel are float
    if data_q and weight_q:
        return "int8", ""
    if data_q or weight_q:
        if data_q:
            return "half", (
                "its weights are not quantized (a functional conv / matmul whose weight is not a parameter, "
                "e.g. one computed in forward)"
            )
        return "half", "its input activation is not quantized; put a Q/DQ pair on its input or dequantize its weights"
    return "float", ""


def _plan_layers_of(plan: EnginePlan, node: str) -> tuple[list[PlanLayer], list[PlanLayer]]:
    """The plan's compute layers implementing ``node`` and, failing that, any plan layer naming it."""
    # A compute layer is named after its network layer, so its first node is its own; tensors it shares with
    # siblings (three heads reading one quantized input) mention the others too.
    compute = [p for p in plan.layers if p.compute_kind is not None and p.nodes[:1] == (node,)]
    compute = compute or [p for p in plan.layers if p.compute_kind is not None and node in p.nodes]
    others = [p for p in plan.layers if p.compute_kind is None and node in p.nodes and p.inputs]
    return compute, others


def _plan_dtype(compute: Sequence[PlanLayer], others: Sequence[PlanLayer]) -> str | None:
    if compute:
        dtypes = {str(p.compute_dtype) for p in compute}
        return "Int8" if dtypes == {"Int8"} else next(d for d in sorted(dtypes) if d != "Int8")
    if others:  # fused into a generated kernel (e.g. attention): int8 if it reads int8 data
        return "Int8" if any(t.dtype == "Int8" for p in others for t in p.inputs) else others[0].inputs[0].dtype
    return None


def audit_plan(
    network: Any,
    plan: EnginePlan,
    qgm: Any | None = None,
    float_dtype: str = "float32",
) -> PlanAudit:
    """Audit ``plan`` (TensorRT's plan of ``network``) against what the network quantizes.

    Args:
        network: the strongly typed INetworkDefinition the engine was built from.
        plan: its :class:`EnginePlan` with ``nodes`` attributed (``engine_and_plan_from_network`` does that).
        qgm: the quantized GraphModule, for the reasons layers are kept in float (optional).
        float_dtype: the dtype asked for float parts; with ``"float16"`` float32 engine layers are reported.
    """
    library = plan.library.split(" ")[0]
    no_kernel = NO_INT8_KERNEL.get(library, set())
    reasons = _float_reasons(qgm) if qgm is not None else {}
    view = NetworkView(network)
    rows, claimed = [], set()
    for layer in view.layers:
        kind = COMPUTE_LAYER_TYPES.get(layer.kind)
        if kind is None:
            continue
        node = layer.node
        graph, half_why = _graph_precision(view, layer)
        compute, others = _plan_layers_of(plan, node)
        claimed.update(p.name for p in compute)
        dtype = _plan_dtype(compute, others)
        names = tuple(p.name for p in (compute or others))
        plan_kind = compute[0].compute_kind if compute else kind
        if graph == "half":
            half_why = reasons.get(node, half_why)  # the quantizer's own account, when it has one
            verdict, why = "fail", f"the graph quantizes it on one side only ({half_why}), so TensorRT runs it in float"
            why += _where(qgm, node)
        elif graph == "int8" and dtype == "Int8":
            verdict, why = "int8", ""
        elif graph == "int8" and plan_kind in no_kernel:
            verdict, why = "no_int8_kernel", f"{library} has no INT8 {plan_kind} kernel; its Q/DQ only cost kernels"
        elif graph == "int8":
            verdict = "fail"
            why = (
                "not found in TensorRT's plan"
                if dtype is None
                else "the graph quantizes its input and weights, yet TensorRT's plan runs it in float"
            )
        else:
            verdict = "float"
            why = reasons.get(node, "no Q/DQ on its inputs in the graph (the quantizer did not quantize it)")
        rows.append(AuditRow(node, layer.name, kind, graph, names, dtype, verdict, why))
    return PlanAudit(
        rows,
        library,
        standalone_qdq=_standalone_qdq(plan),
        reformats=[p.name for p in plan.layers if any(k in p.type.lower() for k in ("reformat", "copy"))],
        float32_layers=_float32_layers(plan) if float_dtype == "float16" else [],
        unattributed=[p.name for p in plan.compute_layers() if p.name not in claimed],
    )


def _where(qgm: Any | None, node: str) -> str:
    """Where a failing node comes from (the module whose forward made it) and how to keep it in float on purpose."""
    fx_node = next((n for n in qgm.graph.nodes if n.name == node), None) if qgm is not None else None
    stack = list((fx_node.meta.get("nn_module_stack") or {}).values()) if fx_node is not None else []
    inside = ""
    if stack:
        path, cls = stack[-1]
        inside = f"; it is called inside module {path!r} ({getattr(cls, '__name__', cls)})"
    return f"{inside}; to keep it in float on purpose: QuantConfig(skip=({node!r},)) / [quant] skip = [{node!r}]"


def _standalone_qdq(plan: EnginePlan) -> list[str]:
    """Generated kernels that only quantize or dequantize: float in, int8 out (or back), fed by no compute layer."""
    produced_by_compute = {t.name for p in plan.compute_layers() for t in p.outputs}
    produced = {t.name for p in plan.layers for t in p.outputs}
    out = []
    for p in plan.layers:
        if p.compute_kind is not None or not p.inputs or not p.outputs:
            continue
        if any(t.name not in produced for t in p.inputs):
            continue  # quantizing a network input needs its own kernel whatever the placement
        ins, outs = {t.dtype for t in p.inputs}, {t.dtype for t in p.outputs}
        fed_by_compute = any(t.name in produced_by_compute for t in p.inputs)
        if not fed_by_compute and (
            (ins == {"Int8"} and "Int8" not in outs) or ("Int8" not in ins and outs == {"Int8"})
        ):
            out.append(p.name)
    return out


def _float32_layers(plan: EnginePlan) -> list[str]:
    # the network's own inputs and outputs stay float32 by design: their boundary casts are not counted
    produced = {t.name for p in plan.layers for t in p.outputs}
    consumed = {t.name for p in plan.layers for t in p.inputs}
    io = (consumed - produced) | (produced - consumed)
    # an INT8 conv / matmul hands its accumulator to its epilogue kernel in float32 whatever the network says
    # (TensorRT's choice, measured): that tensor is not a float part of the network
    io |= {t.name for p in plan.compute_layers() if p.compute_dtype == "Int8" for t in p.outputs}
    return [
        p.name
        for p in plan.layers
        if any(t.dtype == "Float" and t.name not in io and len(t.dims) > 1 for t in (*p.inputs, *p.outputs))
    ]


def _float_reasons(qgm: Any) -> dict[str, str]:
    """FX node -> why the quantizer's configuration keeps it in float (skip, overrides, op kinds)."""
    try:
        config = get_quant_state(qgm).config
    except ConfigError:  # a torch.ao / PT2E graph carries no state of ours: the generic reason stands
        return {}
    modules = dict(qgm.named_modules())
    reasons = {node.name: float_reason(node, modules, config) for node in qgm.graph.nodes}
    return {name: reason for name, reason in reasons.items() if reason is not None}


__all__ = ["AuditRow", "COMPUTE_LAYER_TYPES", "NO_INT8_KERNEL", "PlanAudit", "audit_plan"]
