"""TensorRT's engine plan as data: what the engine will run, layer by layer, with its tensors, bytes and MACs.

An :class:`EnginePlan` is read from what TensorRT itself says (:mod:`fx2trt_pipeline.engine.plan_parse`):
the builder's DETAILED log on a CPU build (TensorRT-RTX's ahead-of-time plan) or ``IEngineInspector``'s
JSON wherever the engine deserializes. Each :class:`PlanLayer` keeps TensorRT's LayerType as logged
(``correlation``, ``gemm``, ``kgen``, ``CaskConvolution``...), its inputs, constants and outputs with their
TensorRT dtype names (``Int8``, ``Half``, ``Float``), and the network layers (named after FX nodes) it
implements. Bytes and MACs are per engine call at the plan's ``batch``; ``bytes_per_item`` divides by it. Our builds
record the plan of a build at the optimization profile's opt shape (``engine_builder.plan_at_opt_shape``): a dynamic
plan logs batch-folded dims (a transformer's ``(-1, 768)`` over batch x tokens) as -1 too, which no batch resolves;
a -1 left in a plan (an inspector's dynamic engine) is taken as the batch.

Written beside an engine as ``<engine>.layers.json`` (:meth:`EnginePlan.write`).

Example:
    >>> t = PlanTensor("x", (-1, 8, 4, 4), "Int8")
    >>> conv = PlanLayer("conv_U1_myl0_1", "correlation", (t,), (PlanTensor("y", (-1, 16, 4, 4), "Float"),),
    ...                  (PlanTensor("w", (16, 8, 3, 3), "Int8"),), nodes=("conv",))
    >>> plan = EnginePlan((conv,), batch=2)
    >>> conv.compute_kind, conv.compute_dtype, conv.macs(2)
    ('conv', 'Int8', 36864)
    >>> plan.summary()["engine_layers"], plan.summary()["int8_compute_layers"], plan.bytes_per_item()
    (1, 1, 1728.0)
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fx2trt_pipeline.atomic_io import atomic_write_text

#: Bytes per element of each dtype as TensorRT names it in plans (log and inspector JSON spellings).
DTYPE_BYTES: dict[str, float] = {
    "Float": 4,
    "Half": 2,
    "BFloat16": 2,
    "BF16": 2,
    "Int8": 1,
    "UInt8": 1,
    "FP8": 1,
    "Int32": 4,
    "Int64": 8,
    "Bool": 1,
    "Int4": 0.5,
    "FP4": 0.5,
}
FLOAT_DTYPES = ("Float", "Half", "BFloat16", "BF16")
PLAN_FORMAT = "fx2trt.plan/1"


@dataclass(frozen=True)
class PlanTensor:
    """One tensor of an engine layer: ``dims`` as TensorRT logged them (-1 = dynamic), dtype, format."""

    name: str
    dims: tuple[int, ...]
    dtype: str
    format: str = ""

    def shape(self, batch: int) -> tuple[int, ...]:
        """The dims with every dynamic (-1) dimension taken as ``batch`` (the profile's opt batch)."""
        return tuple(batch if d < 0 else d for d in self.dims)

    def numel(self, batch: int) -> int:
        return math.prod(self.shape(batch))

    def nbytes(self, batch: int) -> float:
        return self.numel(batch) * DTYPE_BYTES.get(self.dtype, 4)

    def to_dict(self, batch: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape(batch)),
            "dims": list(self.dims),
            "dtype": self.dtype,
            "format": self.format,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanTensor:
        dims = data.get("dims", data.get("shape", []))
        return cls(str(data["name"]), tuple(int(d) for d in dims), str(data["dtype"]), str(data.get("format", "")))


#: Compute ops named inside a fused layer (``runtime_fusion`` ``__myl_CorrMulAddRelu_myl0_1``): float plans fuse
#: conv + BN + activation into such layers, whose LayerType alone says nothing about a conv.
_FUSED_OPS = re.compile(r"(?<![a-z])(Deconv|Corr|Conv|Fc|Gemm|MatMul|Bmm)(?![a-z])")
_KIND_OF_OP = {"Deconv": "deconv", "Corr": "conv", "Conv": "conv", "Fc": "gemm", "Gemm": "gemm", "MatMul": "gemm"}


def compute_kind(layer_type: str, name: str = "") -> str | None:
    """``"conv"``, ``"deconv"``, ``"gemm"`` for the engine layers that run convolutions / matmuls, else None.

    Covers the log's LayerTypes (``correlation``, ``deconv``, ``gemm``), the inspector's (``CaskConvolution``,
    ``CaskDeconvolution``, ``CaskGemmMatrixMultiply``, ``MatrixMultiply``...) and Myelin's fused layers, whose
    name lists their ops (``runtime_fusion`` ``__myl_CorrMulAddRelu``; a ``kgen`` is pointwise glue).

    Example:
        >>> compute_kind("correlation"), compute_kind("runtime_fusion", "__myl_CorrMulAddRelu_myl0_1")
        ('conv', 'conv')
        >>> compute_kind("kgen", "__myl_MulAddRelu_myl0_2") is None
        True
    """
    low = layer_type.lower()
    if "deconv" in low:
        return "deconv"
    if "conv" in low or "correlation" in low:
        return "conv"
    if "gemm" in low or "matrixmultiply" in low or "matmul" in low:
        return "gemm"
    if name.startswith("__myl_") and "kgen" not in low:
        found = _FUSED_OPS.search(name)
        return _KIND_OF_OP.get(found.group(1), "gemm") if found else None
    return None


@dataclass(frozen=True)
class PlanLayer:
    """One engine layer (a kernel) of the plan.

    Attributes:
        name: the engine layer's name (our network layer names are part of it).
        type: TensorRT's LayerType as logged (``correlation``, ``gemm``, ``kgen``, ``maxpool``, ...).
        inputs, outputs, constants: its tensors (constants: weights, bias and scales baked into the kernel).
        tactic: TensorRT's tactic (kernel) name, "" when not given.
        nodes: the network layers (= FX nodes) it implements, found in its name and tensor names.
    """

    name: str
    type: str
    inputs: tuple[PlanTensor, ...] = ()
    outputs: tuple[PlanTensor, ...] = ()
    constants: tuple[PlanTensor, ...] = ()
    tactic: str = ""
    nodes: tuple[str, ...] = ()

    @property
    def fused(self) -> bool:
        """A Myelin fusion whose name lists its ops (its inputs may include a residual beside the data)."""
        return self.name.startswith("__myl_") and compute_kind(self.type) is None

    @property
    def compute_kind(self) -> str | None:
        return compute_kind(self.type, self.name) if (self.inputs or self.constants) else None

    @property
    def compute_dtype(self) -> str | None:
        """For a conv / deconv / gemm layer, the dtype it computes in: its data input's dtype.

        In a fused layer that reads a wider residual beside its data (Int8 conv + Half add), the narrowest input.
        """
        if self.compute_kind is None:
            return None
        if self.fused and self.inputs:
            return min(self.inputs, key=lambda t: DTYPE_BYTES.get(t.dtype, 4)).dtype
        return (self.inputs or self.constants)[0].dtype

    @property
    def kernel(self) -> PlanTensor | None:
        """The weight of a conv / deconv / gemm: its largest constant that is no broadcast (bias, scale, alpha).

        Without one (weights computed by a dequantize), its second input, unless that is shaped like its output:
        then it is a residual fused into the layer, as in every fused layer.
        """
        weights = [t for t in self.constants if len(t.dims) >= 2 and t.dims[0] > 1]
        if not weights and not self.fused and len(self.inputs) > 1:
            second, out = self.inputs[1], self.outputs[0].dims if self.outputs else ()
            weights = [second] if len(second.dims) >= 2 and second.dims != out else []
        return max(weights, key=lambda t: t.numel(1)) if weights else None

    def nbytes(self, batch: int) -> float:
        """Bytes the layer reads and writes: inputs + outputs + constants at ``batch``."""
        return sum(t.nbytes(batch) for t in (*self.inputs, *self.outputs, *self.constants))

    def macs(self, batch: int) -> int:
        """Multiply-accumulates of a conv / deconv / gemm as planned (padded channels included), else 0."""
        kind, kernel = self.compute_kind, self.kernel
        if kind is None or not self.outputs or not self.inputs:
            return 0
        out, data = self.outputs[0].shape(batch), self.inputs[0].shape(batch)
        if kind == "gemm" and self.fused and kernel is not None:  # the weight gives K; input order does not
            return math.prod(out) * (kernel.numel(batch) // max(out[-1], 1))
        if kind == "gemm":
            return math.prod(out) * (data[-1] if data else 1)
        if kernel is None or len(out) < 2 or len(data) < 2:
            return 0
        if kind == "deconv":  # every input element scatters through its kernel slice
            return math.prod(data) * kernel.numel(batch) // max(data[1], 1)
        return math.prod(out) * kernel.numel(batch) // max(out[1], 1)

    def to_dict(self, batch: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "inputs": [t.to_dict(batch) for t in self.inputs],
            "outputs": [t.to_dict(batch) for t in self.outputs],
            "constants": [t.to_dict(batch) for t in self.constants],
            "tactic": self.tactic,
            "nodes": list(self.nodes),
            "bytes": self.nbytes(batch),
            "macs": self.macs(batch),
            "compute": self.compute_kind,
            "compute_dtype": self.compute_dtype,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanLayer:
        def tensors(key: str) -> tuple[PlanTensor, ...]:
            return tuple(PlanTensor.from_dict(t) for t in data.get(key, []))

        return cls(
            str(data["name"]),
            str(data["type"]),
            tensors("inputs"),
            tensors("outputs"),
            tensors("constants"),
            str(data.get("tactic", "")),
            tuple(str(n) for n in data.get("nodes", [])),
        )


@dataclass(frozen=True)
class EnginePlan:
    """The layers TensorRT will run, in execution order, and where the description came from.

    Attributes:
        layers: the engine layers.
        batch: the batch size dynamic dims resolve to (the optimization profile's opt batch; 1 if static).
        source: ``"builder log"`` (TensorRT-RTX ahead-of-time plan, read on any machine) or
            ``"engine inspector"`` (the deserialized engine's own layer information).
        library: ``"tensorrt_rtx 1.7.1.116"`` etc.
        notes: what the plan is and is not (shown with it).
    """

    layers: tuple[PlanLayer, ...]
    batch: int = 1
    source: str = "builder log"
    library: str = ""
    notes: tuple[str, ...] = field(default=())

    def compute_layers(self) -> list[PlanLayer]:
        return [layer for layer in self.layers if layer.compute_kind is not None]

    def total_bytes(self) -> float:
        return sum(layer.nbytes(self.batch) for layer in self.layers)

    def bytes_per_item(self) -> float:
        return self.total_bytes() / max(self.batch, 1)

    def macs_by_dtype(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for layer in self.compute_layers():
            out[str(layer.compute_dtype)] += layer.macs(self.batch)
        return dict(out)

    def summary(self) -> dict[str, Any]:
        """The figures a build prints and records: layer counts, bytes, MACs by dtype."""
        compute = self.compute_layers()
        dtypes = Counter(str(layer.compute_dtype) for layer in compute)
        int8 = sum(1 for layer in compute if layer.compute_dtype == "Int8")
        return {
            # a layer with no tensors (TensorRT-RTX's shape_call) is host work, not a kernel
            "engine_layers": sum(1 for layer in self.layers if layer.inputs or layer.outputs or layer.constants),
            "batch": self.batch,
            "bytes_per_item": self.bytes_per_item(),
            "total_bytes": self.total_bytes(),
            "int8_compute_layers": int8,
            "float_compute_layers": len(compute) - int8,
            "compute_layers_by_dtype": dict(dtypes),
            "macs_per_item_by_dtype": {k: v / max(self.batch, 1) for k, v in self.macs_by_dtype().items()},
            "layer_types": dict(Counter(layer.type for layer in self.layers).most_common()),
        }

    def line(self, unit: str = "item") -> str:
        """One line for the console, e.g. ``107 engine layers, 105.5 MB per image (batch 1); 53/53 ... INT8``."""
        s = self.summary()
        compute = s["int8_compute_layers"] + s["float_compute_layers"]
        return (
            f"{s['int8_compute_layers']}/{compute} convs and matmuls run INT8; {s['engine_layers']} engine layers, "
            f"{s['bytes_per_item'] / 1e6:.1f} MB per {unit} at batch {self.batch}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "source": self.source,
            "library": self.library,
            "batch": self.batch,
            "notes": list(self.notes),
            "summary": self.summary(),
            "layers": [layer.to_dict(self.batch) for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnginePlan:
        return cls(
            tuple(PlanLayer.from_dict(layer) for layer in data.get("layers", [])),
            int(data.get("batch", 1)),
            str(data.get("source", "")),
            str(data.get("library", "")),
            tuple(str(n) for n in data.get("notes", [])),
        )

    def write(self, path: str | Path) -> Path:
        """Write the plan as JSON, atomically."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> EnginePlan:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def plan_path(engine_path: str | Path) -> Path:
    """Where the plan of ``engine_path`` is written: ``model.plan`` -> ``model.plan.layers.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".layers.json")


def attribute_nodes(layers: Iterable[PlanLayer], network_layers: Mapping[str, str]) -> tuple[PlanLayer, ...]:
    """Fill each layer's ``nodes``: the FX nodes whose network layers are named in its name or tensor names.

    ``network_layers`` maps network layer names to FX node names (``ConversionContext.layers``).

    TensorRT decorates names (``features_1_conv_0_0_U169_myl0_4``, ``__mye5994features_1_conv_0_0_before_bias``):
    at each position the longest known name whose next character is not alphanumeric (or ``_``+digit that
    no longer name would cover) wins, so ``features_1_conv_1`` never claims ``features_1_conv_10``.
    """
    names = sorted({n for n in network_layers if n}, key=len, reverse=True)
    by_first: dict[str, list[str]] = {}
    for name in names:
        by_first.setdefault(name[0], []).append(name)
    out = []
    for layer in layers:
        found: dict[str, None] = {}
        for text in (layer.name, *(t.name for t in (*layer.inputs, *layer.outputs))):
            for name in _names_in(text, by_first):
                found.setdefault(network_layers[name], None)
        out.append(replace(layer, nodes=tuple(found)))
    return tuple(out)


def _names_in(text: str, by_first: Mapping[str, list[str]]) -> list[str]:
    hits, i = [], 0
    while i < len(text):
        if i > 0 and (text[i - 1].isalnum()) and not text[i - 1].isdigit():
            i += 1  # a name starts a token: not inside another word
            continue
        for name in by_first.get(text[i], ()):
            end = i + len(name)
            if text.startswith(name, i) and (end == len(text) or not text[end].isalnum()):
                hits.append(name)
                i = end - 1
                break
        i += 1
    return hits


__all__ = ["DTYPE_BYTES", "EnginePlan", "PlanLayer", "PlanTensor", "attribute_nodes", "compute_kind", "plan_path"]
