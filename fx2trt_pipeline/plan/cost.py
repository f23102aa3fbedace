"""What TensorRT's plan would cost on a named GPU: a roofline per engine layer, summed and grouped per FX node.

**An estimate from TensorRT's plan, never a measurement.** Each engine layer (kernel) takes
``max(bytes / bandwidth, 2 * MACs / peak(compute dtype)) + LAUNCH_OVERHEAD_S`` on the GPU's datasheet
figures (:mod:`fx2trt_pipeline.plan.gpus`); the plan's time is the sum (kernels run one after another at
batch 1; overlap between streams is ignored). Bytes are the layer's inputs + outputs + constants, as if
nothing stayed in cache; MACs are as planned (padded channels included).

**Per FX node** (:func:`node_costs`), by dataflow: a layer's input tensor name is its producer's output
tensor name, so each glue kernel (``kgen`` and other pointwise / layout LayerTypes, :data:`GLUE_TYPES`)
finds the compute layers (conv / deconv / gemm) next to it. The rule:

* each compute layer belongs to the FX node named in its layer name (or the one ``names`` gives it);
* a glue kernel that reads the output of compute layers is their **epilogue** (bias, activation,
  residual add, quantize), split equally among them;
* if that kernel also writes more elements than its largest input and a compute layer reads them (the
  4x Int8 layout before an INT8 depthwise conv), the reading layers own the growth: they get
  ``1 - in/out`` of it as **expansion** (split equally), the producers the rest;
* a glue kernel that reads no compute output but feeds compute layers is their **prologue** (quantize,
  pad, copy of a network input), split equally;
* other kernels (pooling, reductions, network copies between glue kernels) belong to no node.

Each kernel's shares sum to at most 1, so the nodes never cost more than the plan.

Example:
    >>> from fx2trt_pipeline.engine.engine_plan import EnginePlan, PlanLayer, PlanTensor
    >>> t = lambda name, c, dtype: PlanTensor(name, (1, c, 8, 8), dtype)
    >>> conv = PlanLayer("conv_U1_myl0_1", "correlation", (t("q", 16, "Int8"),), (t("y", 16, "Float"),),
    ...                  (PlanTensor("w", (16, 16, 3, 3), "Int8"),), nodes=("conv",))
    >>> epilogue = PlanLayer("__myl_MulAddRelu_myl0_2", "kgen", (t("y", 16, "Float"),), (t("z", 16, "Int8"),))
    >>> plan = EnginePlan((conv, epilogue))
    >>> est = estimate(plan, "L4")
    >>> round(est.seconds_per_item * 1e6, 3), est.layers[1].bound
    (4.042, 'launch')
    >>> cost = node_costs(plan, "L4")["conv"]
    >>> [(k.name, k.role, k.share) for k in cost.kernels], cost.bytes
    ([('conv_U1_myl0_1', 'compute', 1.0), ('__myl_MulAddRelu_myl0_2', 'epilogue', 1.0)], 12544.0)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fx2trt_pipeline.engine.engine_plan import EnginePlan, PlanLayer
from fx2trt_pipeline.plan.gpus import DEFAULT_GPUS, GPU
from fx2trt_pipeline.plan.gpus import gpu as gpu_named

#: Fixed cost added to every kernel: launch plus the tail of a small grid. An assumption (a few microseconds
#: is typical of CUDA kernel launches back to back), not a figure from the datasheets or the plan.
LAUNCH_OVERHEAD_S = 2e-6
ESTIMATE_LABEL = "estimate from TensorRT's plan (roofline on datasheet peaks), not a measurement"
#: LayerTypes of glue kernels that may be attributed to a node (lower-case substrings): TensorRT-RTX's
#: generated ``kgen`` kernels and the inspector's pointwise / reformat / Q/DQ names.
GLUE_TYPES = ("kgen", "pointwise", "reformat", "shuffle", "scale", "elementwise", "cast", "quantize", "activation")


def compute_node(layer: PlanLayer) -> str | None:
    """The FX node a compute layer implements: the longest of its nodes named in the layer's own name.

    Tensor names are not enough: a fused float layer's output may be named after the layer that reads it.
    """
    named = [n for n in layer.nodes if n in layer.name]
    return max(named, key=len) if named else None


@dataclass(frozen=True)
class LayerEstimate:
    """One engine layer's roofline on one GPU, per engine call (the plan's batch)."""

    name: str
    type: str
    bytes: float
    macs: int
    compute_dtype: str | None
    memory_s: float
    compute_s: float
    seconds: float

    @property
    def bound(self) -> str:
        """``memory``, ``compute`` or ``launch``: which term dominates the estimate."""
        if self.seconds == 0 or max(self.memory_s, self.compute_s) < LAUNCH_OVERHEAD_S:
            return "launch"
        return "memory" if self.memory_s >= self.compute_s else "compute"


def layer_estimate(layer: PlanLayer, gpu: GPU | str, batch: int) -> LayerEstimate:
    """The roofline of one engine layer; a layer with no tensors (signal / wait / shape call) costs nothing."""
    spec = gpu_named(gpu)
    if not (layer.inputs or layer.outputs or layer.constants):
        return LayerEstimate(layer.name, layer.type, 0.0, 0, None, 0.0, 0.0, 0.0)
    nbytes, macs, dtype = layer.nbytes(batch), layer.macs(batch), layer.compute_dtype
    memory_s = nbytes / spec.memory_bandwidth
    compute_s = 2 * macs / spec.peak(dtype) if macs else 0.0
    return LayerEstimate(
        layer.name, layer.type, nbytes, macs, dtype, memory_s, compute_s, max(memory_s, compute_s) + LAUNCH_OVERHEAD_S
    )


@dataclass(frozen=True)
class PlanEstimate:
    """A plan's estimated time on one GPU: per-layer rooflines (per engine call at ``batch``) and the total."""

    gpu: str
    batch: int
    layers: tuple[LayerEstimate, ...]
    plan_source: str
    label: str = ESTIMATE_LABEL

    @property
    def seconds(self) -> float:
        return sum(layer.seconds for layer in self.layers)

    @property
    def seconds_per_item(self) -> float:
        return self.seconds / max(self.batch, 1)

    def top(self, n: int = 5) -> list[LayerEstimate]:
        """The ``n`` layers estimated to cost most."""
        return sorted(self.layers, key=lambda layer: layer.seconds, reverse=True)[:n]

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "batch": self.batch, "label": self.label, "plan_source": self.plan_source,
                "seconds_per_item": self.seconds_per_item,
                "layers": [{**vars(layer), "bound": layer.bound} for layer in self.layers]}  # fmt: skip


def estimate(plan: EnginePlan, gpu: GPU | str) -> PlanEstimate:
    """The roofline estimate of ``plan`` on ``gpu`` (a :class:`GPU` or a name in :data:`~.gpus.GPUS`)."""
    spec = gpu_named(gpu)
    layers = tuple(layer_estimate(layer, spec, plan.batch) for layer in plan.layers)
    return PlanEstimate(spec.name, plan.batch, layers, f"{plan.source} {plan.library}".strip())


def estimates(plan: EnginePlan, gpus: Iterable[GPU | str] = DEFAULT_GPUS) -> dict[str, float]:
    """GPU name -> estimated seconds per item (an estimate from TensorRT's plan, not a measurement)."""
    return {(e := estimate(plan, g)).gpu: e.seconds_per_item for g in gpus}


@dataclass(frozen=True)
class KernelCost:
    """The share of one engine layer a node is charged: role, fraction and the resulting cost per item."""

    name: str
    type: str
    role: str  # "compute", "epilogue", "expansion" or "prologue"
    share: float
    bytes: float
    macs: float
    seconds: float


@dataclass(frozen=True)
class NodeCost:
    """What one FX node's conv / deconv / linear / matmul costs in a plan, per item, with the kernels it owns."""

    node: str
    compute_dtype: str
    kernels: tuple[KernelCost, ...]

    @property
    def bytes(self) -> float:
        return sum(k.bytes for k in self.kernels)

    @property
    def macs(self) -> float:
        return sum(k.macs for k in self.kernels)

    @property
    def seconds(self) -> float:
        return sum(k.seconds for k in self.kernels)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "compute_dtype": self.compute_dtype, "bytes": self.bytes, "macs": self.macs,
                "seconds": self.seconds, "kernels": [vars(k) for k in self.kernels]}  # fmt: skip


def _is_glue(layer: PlanLayer) -> bool:
    low = layer.type.lower()
    return layer.compute_kind is None and any(g in low for g in GLUE_TYPES)


def attribution(plan: EnginePlan, names: Mapping[str, str] | None = None) -> dict[str, list[tuple[int, str, float]]]:
    """Node -> ``(layer index, role, share)`` of every engine layer charged to it, by the module's rule.

    ``names`` maps engine layer names of compute layers to FX nodes, for those whose name carries none
    (:func:`match_compute_layers`); a compute layer with neither is keyed by its engine layer name.
    """
    names = names or {}
    layers, batch = plan.layers, plan.batch
    key = {i: names.get(x.name) or compute_node(x) or x.name for i, x in enumerate(layers) if x.compute_kind}
    producer = {t.name: i for i, layer in enumerate(layers) for t in layer.outputs}
    readers: defaultdict[str, set[int]] = defaultdict(set)
    for i, layer in enumerate(layers):
        for t in layer.inputs:
            readers[t.name].add(i)
    out: dict[str, list[tuple[int, str, float]]] = {}
    for i in key:
        out.setdefault(key[i], []).append((i, "compute", 1.0))
    for i, layer in enumerate(layers):
        if not _is_glue(layer):
            continue
        prods = sorted({producer[t.name] for t in layer.inputs if producer.get(t.name) in key})
        cons = sorted({j for t in layer.outputs for j in readers[t.name] if j in key})
        growth = 0.0
        if prods and cons:
            into = max(t.numel(batch) for t in layer.inputs)
            grown = max(t.numel(batch) for t in layer.outputs)
            growth = 1.0 - into / grown if grown > into else 0.0
        charges = [(p, "epilogue", (1.0 - growth) / len(prods)) for p in prods]
        if growth:
            charges += [(c, "expansion", growth / len(cons)) for c in cons]
        elif not prods:
            charges = [(c, "prologue", 1.0 / len(cons)) for c in cons]
        for j, role, share in charges:
            out[key[j]].append((i, role, share))
    return out


def node_costs(plan: EnginePlan, gpu: GPU | str, names: Mapping[str, str] | None = None) -> dict[str, NodeCost]:
    """FX node -> its :class:`NodeCost` on ``gpu`` (per item), grouped by :func:`attribution`."""
    per_layer = estimate(plan, gpu).layers
    items = max(plan.batch, 1)
    out = {}
    for node, charged in attribution(plan, names).items():
        kernels = []
        for i, role, share in charged:
            e = per_layer[i]
            kernels.append(KernelCost(e.name, e.type, role, share, e.bytes * share / items, e.macs * share / items,
                                      e.seconds * share / items))  # fmt: skip
        dtypes = dict.fromkeys(str(plan.layers[i].compute_dtype) for i, role, _ in charged if role == "compute")
        out[node] = NodeCost(node, "/".join(dtypes), tuple(kernels))
    return out


def _signature(layer: PlanLayer, batch: int) -> tuple[Any, ...]:
    """What identifies a compute layer across plans of one model: kind, output shape, weight shape, input size.

    A weight's input-channel dim under 4 counts as 4: TensorRT pads INT8 convs' small channel counts
    (3 -> 4 for an RGB input; a depthwise conv's 1 -> 4 with its input expanded 4x).
    """
    kind, out, kernel = layer.compute_kind, layer.outputs[0].shape(batch), layer.kernel
    if kernel is None:
        return (kind, out)
    if kind == "gemm":
        return (kind, out, kernel.numel(batch))
    k = kernel.dims
    data = max(layer.inputs, key=lambda t: t.numel(batch)).shape(batch) if layer.inputs else ()
    return (kind, out, k[:1], max(k[1], 4) if len(k) > 1 else 0, k[2:], data[2:])


def match_compute_layers(reference: EnginePlan, plan: EnginePlan) -> dict[str, str]:
    """Engine layer name -> FX node for ``plan``'s compute layers whose names carry no node, from ``reference``.

    ``reference`` is another plan of the same model whose compute layers are named (the INT8 plan: Q/DQ keep
    the names); ``plan`` may fuse conv + BN + activation into unnamed layers (a float plan's
    ``__myl_CorrMulAddRelu``). Each unnamed layer takes, in execution order, the first reference node with the
    same :func:`_signature` not yet taken; a layer with no such node stays unmatched.
    """
    free: defaultdict[tuple[Any, ...], list[str]] = defaultdict(list)
    named = {compute_node(layer) for layer in plan.layers if layer.compute_kind} - {None}
    for layer in reference.layers:
        node = compute_node(layer) if layer.compute_kind else None
        if node is not None and node not in named:
            free[_signature(layer, reference.batch)].append(node)
    out = {}
    for layer in plan.layers:
        if layer.compute_kind and compute_node(layer) is None:
            candidates = free.get(_signature(layer, plan.batch))
            if candidates:
                out[layer.name] = candidates.pop(0)
    return out


__all__ = [
    "ESTIMATE_LABEL", "GLUE_TYPES", "LAUNCH_OVERHEAD_S", "KernelCost", "LayerEstimate", "NodeCost", "PlanEstimate",
    "attribution", "compute_node", "estimate", "estimates", "layer_estimate", "match_compute_layers", "node_costs",
]  # fmt: skip
