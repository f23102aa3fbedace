"""TensorRT's plan of a QDQ ONNX file, and a layer-by-layer comparison of two plans.

The route trtexec and datacenter users take: TensorRT's own ``OnnxParser`` reads the (QDQ) ONNX file into a
STRONGLY_TYPED network, which is built like ours (:func:`~fx2trt_pipeline.engine.engine_builder.
engine_and_plan_from_network`). Comparing that plan with the plan of our own network says whether our converters
hand TensorRT the same graph the ONNX route does, judged by what TensorRT will run: engine layer types and the
dtypes of their inputs and outputs, position by position.

::

    model.onnx --OnnxParser--> network --build--> EnginePlan  \\
                                                                compare_plans -> PlanComparison (truthy = same)
    qgm --network_from_graph_module--> network --build--> EnginePlan  /

Measured (TensorRT-RTX 1.7.1, CPU build): for torchvision resnet18 and mobilenet_v2 with BN statistics from data,
both routes give the same plan, every layer (``signal``/``wait`` stream markers included) of the same type and
dtypes. An all-zero bias differs below the signature: torch's ONNX exporter drops it from Conv/Gemm while our
network adds it, so the epilogue kernel keeps an ``Add`` (and, for a residual add, lists its inputs in the other
order); a freshly initialised BatchNorm folds to exactly such a bias.

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
    >>> from fx2trt_pipeline.network.network import network_from_graph_module
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> spec = ftp.InputSpec("x", (2, 3, 16, 16))
    >>> builder, network, ctx = network_from_graph_module(qgm, [spec], builder=create_builder())
    >>> ours = engine_and_plan_from_network(builder, network, [spec])[1]
    >>> theirs = plan_from_onnx(ftp.export_qdq_onnx(qgm, (x,), "m.onnx", input_names=["x"]), [spec])
    >>> result = compare_plans(ours, theirs)
    >>> bool(result), [s[0] for s in plan_signature(theirs) if s[0] == "correlation"]
    (True, ['correlation', 'correlation'])
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
from fx2trt_pipeline.engine.engine_plan import EnginePlan
from fx2trt_pipeline.engine.options import BuildOptions
from fx2trt_pipeline.errors import EngineBuildError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.plan.audit import PlanAudit, audit_plan
from fx2trt_pipeline.trt_types import make_logger

#: One engine layer as compared: (LayerType, input dtypes, output dtypes).
Signature = tuple[str, tuple[str, ...], tuple[str, ...]]


def plan_from_onnx(path: str | Path, inputs: Sequence[InputSpec], options: BuildOptions | None = None) -> EnginePlan:
    """Parse an ONNX file with TensorRT's ``OnnxParser`` into a STRONGLY_TYPED network, build it, return its plan.

    Args:
        path: the (QDQ) ONNX file; external data is read from beside it, as trtexec does.
        inputs: one InputSpec per dynamic ONNX input (named as in the ONNX graph), as for our own builds.
        options: build settings (``None``: TensorRT's defaults; the plan needs DETAILED profiling verbosity,
            which is used unless ``options`` asks for another).

    Returns:
        TensorRT's plan of the engine (read from the build log; layer ``nodes`` name the ONNX nodes).

    Raises:
        EngineBuildError: the file is missing, the parser refused it (its errors are quoted), TensorRT could not
            build the network, or ``options`` turned the plan off.

    Example:
        The module's example builds a two-conv model both ways and compares the plans.
    """
    return _parse_and_plan(path, inputs, options, audit=False)[0]


def audit_onnx(path: str | Path, inputs: Sequence[InputSpec], options: BuildOptions | None = None) -> PlanAudit:
    """The precision audit of a QDQ ONNX as trtexec and datacenter users build it: TensorRT's ONNX parser, its plan.

    Every Conv / ConvTranspose / MatMul / Gemm whose inputs the ONNX dequantizes must read int8 in TensorRT's plan;
    rows are named after the ONNX nodes (:func:`fx2trt_pipeline.plan.audit.audit_plan`).
    """
    audit = _parse_and_plan(path, inputs, options, audit=True)[1]
    if audit is None:  # pragma: no cover - audit=True always audits
        raise EngineBuildError(f"{path}: no audit was made")
    return audit


def _parse_and_plan(
    path: str | Path, inputs: Sequence[InputSpec], options: BuildOptions | None, audit: bool
) -> tuple[EnginePlan, PlanAudit | None]:
    trt = trt_api.get_trt()
    path = Path(path)
    if not path.is_file():
        raise EngineBuildError(f"ONNX file {path} does not exist; export one with ftp.export_qdq_onnx()")
    # One logger for parser and builder, keeping VERBOSE: the plan is a VERBOSE message of the build.
    logger = make_logger("VERBOSE")
    builder = create_builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)  # owns the parsed weights: keep it alive until the build is done
    if not parser.parse_from_file(str(path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors()
        raise EngineBuildError(
            f"TensorRT's OnnxParser ({trt_api.library_name()} {trt_api.library_version()}) could not parse {path}:"
            + "".join(f"\n  - {e}" for e in errors or ["(no error message given)"])
        )
    _, plan = engine_and_plan_from_network(builder, network, inputs, options)
    if plan is None:
        raise EngineBuildError(
            f"The build of {path} logged no plan: leave BuildOptions.profiling_verbosity unset or 'DETAILED'"
        )
    result = audit_plan(network, plan) if audit else None
    del parser
    return plan, result


def _parser_error(error: object) -> str:
    """One parser error as ``node <name> (<op>): <description>`` where the parser names the node."""
    # getattr: node_name/node_operator are TensorRT 10's; older parsers' errors only have desc().
    desc = str(getattr(error, "desc", lambda: error)())
    node = str(getattr(error, "node_name", lambda: "")() or "")
    op = str(getattr(error, "node_operator", lambda: "")() or "")
    return f"node {node} ({op}): {desc}" if node else desc


def plan_signature(plan: EnginePlan) -> list[Signature]:
    """Per engine layer, in execution order: (LayerType, input dtypes, output dtypes).

    Every layer counts, the tensorless ``signal``/``wait`` stream markers too: both routes plan them alike, so
    no layer needs to be left out. Names, shapes and tactics are not part of it (the ONNX route names layers
    after ONNX nodes; tactics carry hashes).
    """
    return [
        (layer.type, tuple(t.dtype for t in layer.inputs), tuple(t.dtype for t in layer.outputs))
        for layer in plan.layers
    ]


def format_signature(sig: Signature | None) -> str:
    """``correlation (Int8) -> (Float)``; ``-`` for no layer."""
    if sig is None:
        return "-"
    return f"{sig[0]} ({', '.join(sig[1])}) -> ({', '.join(sig[2])})"


@dataclass(frozen=True)
class PlanComparison:
    """Whether two plans run the same engine layers with the same dtypes; truthy when they do.

    Attributes:
        ours_layers, theirs_layers: how many engine layers each plan has.
        differences: the first differing positions, aligned (``difflib``) so that one extra layer shows as one
            difference: ``(our index, their index, our signature, their signature)``, ``None`` on the side that
            has no layer there.
        ours_counts, theirs_counts: each plan's layers counted by signature.
        total_differences: how many aligned positions differ in all (``differences`` keeps the first few).
    """

    ours_layers: int
    theirs_layers: int
    differences: tuple[tuple[int | None, int | None, Signature | None, Signature | None], ...] = ()
    ours_counts: dict[Signature, int] = field(default_factory=dict)
    theirs_counts: dict[Signature, int] = field(default_factory=dict)
    total_differences: int = 0

    def __bool__(self) -> bool:
        return self.total_differences == 0

    def count_differences(self) -> list[tuple[Signature, int, int]]:
        """``(signature, ours, theirs)`` for every signature the two plans count differently."""
        keys = sorted(set(self.ours_counts) | set(self.theirs_counts))
        return [
            (k, self.ours_counts.get(k, 0), self.theirs_counts.get(k, 0))
            for k in keys
            if self.ours_counts.get(k, 0) != self.theirs_counts.get(k, 0)
        ]

    def __str__(self) -> str:
        if self:
            return f"same plan: {self.ours_layers} engine layers, same type and dtypes at every position"
        lines = [f"plans differ: ours has {self.ours_layers} engine layers, theirs {self.theirs_layers}"]
        lines.append(f"  first {len(self.differences)} of {self.total_differences} differences (ours | theirs):")
        for i, j, a, b in self.differences:
            left = f"[{i}] {format_signature(a)}" if i is not None else "(none)"
            right = f"[{j}] {format_signature(b)}" if j is not None else "(none)"
            lines.append(f"    {left:<60} | {right}")
        counts = self.count_differences()
        if counts:
            lines.append("  layers counted by signature, where the counts differ (ours / theirs):")
            lines += [f"    {format_signature(k)}: {a} / {b}" for k, a, b in counts]
        return "\n".join(lines)


def compare_plans(ours: EnginePlan, theirs: EnginePlan, max_differences: int = 8) -> PlanComparison:
    """Compare two plans layer type for layer type and dtype for dtype, in execution order.

    Example:
        >>> from fx2trt_pipeline.engine.engine_plan import PlanLayer, PlanTensor
        >>> def layer(kind, din, dout):
        ...     return PlanLayer(kind, kind, (PlanTensor("i", (1, 8), din),), (PlanTensor("o", (1, 8), dout),))
        >>> a = EnginePlan((layer("kgen", "Float", "Int8"), layer("correlation", "Int8", "Float")))
        >>> b = EnginePlan((layer("kgen", "Float", "Int8"), layer("correlation", "Float", "Float")))
        >>> bool(compare_plans(a, a)), bool(compare_plans(a, b))
        (True, False)
        >>> print(compare_plans(a, b))  # doctest: +NORMALIZE_WHITESPACE
        plans differ: ours has 2 engine layers, theirs 2
          first 1 of 1 differences (ours | theirs):
            [1] correlation (Int8) -> (Float) | [1] correlation (Float) -> (Float)
          layers counted by signature, where the counts differ (ours / theirs):
            correlation (Float) -> (Float): 0 / 1
            correlation (Int8) -> (Float): 1 / 0
    """
    left, right = plan_signature(ours), plan_signature(theirs)
    differences: list[tuple[int | None, int | None, Signature | None, Signature | None]] = []
    # autojunk off: in a long plan the common kernels (kgen, correlation) would otherwise be ignored as junk.
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            differences.append(
                (
                    i if i < i2 else None,
                    j if j < j2 else None,
                    left[i] if i < i2 else None,
                    right[j] if j < j2 else None,
                )
            )
    return PlanComparison(
        len(left),
        len(right),
        tuple(differences[:max_differences]),
        dict(Counter(left)),
        dict(Counter(right)),
        len(differences),
    )


__all__ = [
    "PlanComparison",
    "Signature",
    "audit_onnx",
    "compare_plans",
    "format_signature",
    "plan_from_onnx",
    "plan_signature",
]
