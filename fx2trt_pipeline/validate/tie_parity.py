"""Tie-aware parity: an engine-side backend against the simulated INT8 model, quantize layer by layer.

End-to-end cosine cannot gate parity: one int8 value on a rounding tie (``x / s = k + 0.5`` to a few
ulps) that rounds the other way in another runtime moves MobileNetV2's output cosine to ~0.99, while
a real error (a weight scale off by 1.5x) can hide above 0.99 in a deep network. So the check is local:

1. run the simulated model, keeping every activation quantize node's int8 output and its value before
   rounding (``x / s`` in float32, exactly what the quantize op rounds);
2. run the backend region by region (:mod:`.tie_regions`): every quantize layer's output is replaced
   by the reference int8 value, so each region computes from the reference int8 inputs;
3. at each quantize layer, count the int8 values that differ (*flips*). A flip is allowed only when it
   is one step and the reference value lies within ``tie_window`` steps of a ``.5`` tie (for a quantize
   whose input is float16, within ``float16_ulps`` float16 ulps of that input; see :class:`TieTolerance`);
   any other flip fails the region. The network outputs, computed from reference inputs, must match to
   ``output_min_sqnr_db``. A quantize node the backend lacks (a missing Q/DQ pair) fails too.
4. report the end-to-end cosine of a free run beside the *noise floor*: the lowest output cosine the
   simulated model itself shows when one of its likeliest tie values is flipped by one step.

The report (:mod:`.tie_report`: :class:`TieTolerance`, :class:`RegionResult`, :class:`TieParityReport`) names
the first failing region (graph order) with the layers that feed it.

Example:
    >>> from fx2trt_pipeline.validate.tie_parity import tie_parity
    >>> from fx2trt_pipeline.validate.tie_regions import ExecutorRegions
    >>> report = tie_parity(qgm, ExecutorRegions(network), (x,))   # doctest: +SKIP
    >>> assert report, str(report)                                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.fx import GraphModule, Interpreter, Node

from fx2trt_pipeline.capture import flatten_outputs
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize import qdq_ops
from fx2trt_pipeline.validate.compare import cosine_similarity, sqnr_db
from fx2trt_pipeline.validate.tie_regions import ExecutorRegions, OnnxRuntimeRegions, QuantizePoint
from fx2trt_pipeline.validate.tie_report import (
    DEPLOYMENT_ADVISORY_COSINE,
    FLOAT16_FLIP_RATE,
    FLOAT16_TIE_ULPS,
    RegionResult,
    TieParityReport,
    TieTolerance,
)

# ----------------------------------------------------------------------------------- the reference


class _Reference(Interpreter):
    """Runs the simulated model keeping quantize outputs and pre-rounding values; can substitute them."""

    def __init__(self, gm: GraphModule, substitutes: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.substitutes = substitutes or {}
        self.int8: dict[str, torch.Tensor] = {}
        self.pre_round: dict[str, torch.Tensor] = {}
        #: float16 quantize inputs: the exponent ``e`` of their float16 ulp ``2**e`` (int8: cheap to keep).
        self.ulp_exponent: dict[str, torch.Tensor] = {}

    def run_node(self, n: Node) -> Any:
        if _is_activation_quantize(n) and not self.substitutes:
            x, scale = self.env[n.args[0]], self.env[n.args[1]]
            self.pre_round[n.name] = x.to(torch.float32) / scale.to(torch.float32)
            if x.dtype == torch.float16:
                self.ulp_exponent[n.name] = float16_ulp_exponent(x)
        result = super().run_node(n)
        if n.name in self.substitutes:
            value = self.substitutes[n.name]
            if isinstance(result, torch.Tensor) and result.is_quantized:  # torch.ao: a qint8 tensor, same scale
                return torch._make_per_tensor_quantized_tensor(value, result.q_scale(), result.q_zero_point())
            return value
        if qdq_ops.is_quantize(n) or _is_activation_quantize(n):
            self.int8[n.name] = result.int_repr() if result.is_quantized else result
        return result


def _is_activation_quantize(n: Node) -> bool:
    """A per-tensor activation quantize: ours (no axis), or torch.ao's ``torch.quantize_per_tensor`` with a scale
    read from the graph (torch.ao reference graphs, whose qint8 values the region check reads as int8)."""
    if qdq_ops.is_quantize(n):
        return n.args[2] is None
    return n.op == "call_function" and n.target is torch.quantize_per_tensor and isinstance(n.args[1], Node)


def quantize_points(qgm: GraphModule) -> list[QuantizePoint]:
    """The activation (per-tensor) quantize nodes of ``qgm`` in graph order, with their scales."""
    points = []
    for n in qgm.graph.nodes:
        if _is_activation_quantize(n) and isinstance(n.args[1], Node) and n.args[1].op == "get_attr":
            scale = functools.reduce(getattr, str(n.args[1].target).split("."), qgm)
            points.append(QuantizePoint(n.name, float(scale.reshape(()))))
    return points


def region_layers(qgm: GraphModule, point: str) -> tuple[str, ...]:
    """The computing nodes between the quantize node ``point`` and the dequantize nodes feeding its region."""
    nodes = {n.name: n for n in qgm.graph.nodes}
    found, stack, seen = [], [nodes[point].args[0]], set()
    while stack:
        node = stack.pop()
        if not isinstance(node, Node) or node in seen or node.op in ("placeholder", "get_attr"):
            continue
        seen.add(node)
        if qdq_ops.is_any_dequantize(node) or qdq_ops.is_any_quantize(node):
            continue
        found.append(node.name)
        stack.extend(node.all_input_nodes)
    order = {n.name: i for i, n in enumerate(qgm.graph.nodes)}
    return tuple(sorted(found, key=order.__getitem__))


# ---------------------------------------------------------------------------------- comparisons


def float16_ulp_exponent(x: torch.Tensor) -> torch.Tensor:
    """``e`` with ``2**e`` the spacing of float16 values at ``x`` (int8; subnormals and zero: -24).

    Example:
        >>> float16_ulp_exponent(torch.tensor([1.0, 1.5, 2.0, 0.0], dtype=torch.float16)).tolist()
        [-10, -10, -9, -24]
    """
    _, exponent = torch.frexp(x.to(torch.float32))  # |x| = m * 2**exponent, 0.5 <= m < 1
    return (exponent.to(torch.int16) - 11).clamp_(min=-24).masked_fill_(x == 0, -24).to(torch.int8)


def compare_int8(
    name: str,
    layers: tuple[str, ...],
    own: torch.Tensor,
    ref: torch.Tensor,
    pre_round: torch.Tensor,
    tie_window: float,
    window: torch.Tensor | None = None,
) -> RegionResult:
    """Count flips of ``own`` vs ``ref`` and how many are one-step flips on a ``.5`` tie.

    ``window``: per-value tie windows in steps (float16 inputs), used where wider than ``tie_window``.
    """
    own, ref = own.to(ref.device), ref
    if own.shape != ref.shape:
        return RegionResult(name, layers, ref.numel(), ref.numel(), 0, 256)
    diff = (own.to(torch.int16) - ref.to(torch.int16)).abs()
    flipped = diff > 0
    flips = int(flipped.sum())
    if not flips:
        return RegionResult(name, layers, ref.numel())
    frac = pre_round.to(ref.device)[flipped].abs().remainder(1.0)
    limit: Any = tie_window if window is None else window.to(ref.device)[flipped].clamp(min=tie_window)
    on_tie = ((frac - 0.5).abs() <= limit) & (diff[flipped] == 1)
    return RegionResult(name, layers, ref.numel(), flips, int(on_tie.sum()), int(diff.max()))


def _noise_floor(
    qgm: GraphModule, inputs: Sequence[torch.Tensor], ref: _Reference, outputs: list[torch.Tensor], count: int
) -> float | None:
    """Lowest output cosine when one of the ``count`` likeliest tie values is flipped by one step."""
    candidates = []
    for name, pre in ref.pre_round.items():
        distance = ((pre.abs().remainder(1.0) - 0.5).abs() + (pre.abs() > 127).float()).reshape(-1)
        index = int(distance.argmin())
        candidates.append((float(distance[index]), name, index))
    worst = None
    for _, name, index in sorted(candidates)[:count]:
        q = ref.int8[name].clone().reshape(-1)
        pre = float(ref.pre_round[name].reshape(-1)[index])
        q[index] += 1 if pre > float(q[index]) else -1  # round the other way
        flipped = _Reference(qgm, {name: q.reshape(ref.int8[name].shape)})
        with torch.no_grad():
            moved = flatten_outputs(flipped.run(*inputs))
        cos = min(cosine_similarity(a, b) for a, b in zip(outputs, moved))
        worst = cos if worst is None else min(worst, cos)
    return worst


class TieReference:
    """The simulated model's run on the parity batch (int8 values, pre-rounding values, outputs), made once and
    shared by every backend's tie-aware parity, with its noise floor computed once per flip count.

    Example:
        >>> reference = TieReference(qgm, [x])                                   # doctest: +SKIP
        >>> tie_parity(qgm, ExecutorRegions(network), [x], reference=reference)  # doctest: +SKIP
    """

    def __init__(self, qgm: GraphModule, inputs: Sequence[torch.Tensor]) -> None:
        self.qgm, self.inputs = qgm, list(inputs)
        self.run = _Reference(qgm)
        with torch.no_grad():
            self.outputs = flatten_outputs(self.run.run(*self.inputs))
        self.points = quantize_points(qgm)
        self._floors: dict[int, float | None] = {}

    def noise_floor(self, count: int) -> float | None:
        """Lowest output cosine when one of the ``count`` likeliest tie values flips (``None`` for 0)."""
        if count not in self._floors:
            self._floors[count] = _noise_floor(self.qgm, self.inputs, self.run, self.outputs, count) if count else None
        return self._floors[count]


def tie_parity(
    qgm: GraphModule,
    backend: Any,
    inputs: Sequence[torch.Tensor],
    tolerance: TieTolerance | None = None,
    *,
    reference: TieReference | None = None,
    free_outputs: Sequence[torch.Tensor] | None = None,
) -> TieParityReport:
    """Tie-aware parity of ``backend`` (:class:`~.tie_regions.ExecutorRegions` or
    :class:`~.tie_regions.OnnxRuntimeRegions`) against the simulated model ``qgm``.

    Args:
        qgm: the reference-quantized GraphModule the backend's network or ONNX model came from.
        backend: has ``name``, ``input_names``, ``run(feeds)`` and ``run_regions(feeds, points, reference)``.
        inputs: positional inputs, in the backend's input order.
        tolerance: tie window, output SQNR floor, noise-floor flips (:class:`TieTolerance`).
        reference: the simulated run on ``inputs`` when several backends are checked (made here if ``None``).
        free_outputs: the backend's own outputs on ``inputs`` in graph order, when already run (else run here).

    Returns:
        A :class:`TieParityReport`, truthy when every region passes.

    Example:
        >>> report = tie_parity(qgm, OnnxRuntimeRegions("model.onnx"), (x,))   # doctest: +SKIP
        >>> print(report.summary())                                          # doctest: +SKIP
    """
    tol = tolerance or TieTolerance()
    if len(inputs) != len(backend.input_names):
        raise ConfigError(f"{len(inputs)} inputs given; {backend.name} expects {backend.input_names}")
    feeds = dict(zip(backend.input_names, inputs))
    reference = reference or TieReference(qgm, inputs)
    ref, sim_outputs = reference.run, reference.outputs
    run = backend.run_regions(feeds, reference.points, ref.int8)
    regions = []
    for p in reference.points:
        layers = region_layers(qgm, p.name)
        if p.name in run.missing:
            regions.append(RegionResult(p.name, layers, ref.int8[p.name].numel(), missing=True))
        elif p.name in run.own:
            window = None
            if p.name in ref.ulp_exponent:  # float16 input: the float16 ulp of x, in steps of the scale
                window = torch.ldexp(torch.tensor(tol.float16_ulps / p.scale), ref.ulp_exponent[p.name].float())
            own, want = run.own[p.name], ref.int8[p.name]
            result = compare_int8(p.name, layers, own, want, ref.pre_round[p.name], tol.tie_window, window)
            if window is not None:
                result = dataclasses.replace(result, allowed=int(result.elements * tol.float16_flip_rate))
            regions.append(result)
    output_node = next(n for n in qgm.graph.nodes if n.op == "output")
    out_layers = tuple(a.name for a in output_node.all_input_nodes)
    outputs = [
        RegionResult(f"output_{i}", out_layers, r.numel(), sqnr_db=sqnr_db(r, o.to(r.device).to(r.dtype)))
        for i, (r, o) in enumerate(zip(sim_outputs, run.outputs))
    ]
    free = list(free_outputs) if free_outputs is not None else backend.run(feeds)
    cos = min((cosine_similarity(r, o.to(r.device).to(r.dtype)) for r, o in zip(sim_outputs, free)), default=math.nan)
    return TieParityReport(backend.name, regions, outputs, cos, reference.noise_floor(tol.noise_flips), tol)


def region_backend(runner: Any) -> Any:
    """The region-by-region form of an engine-side runner (possibly chunked): the network executor's or ONNX
    Runtime's; ``None`` for runners that cannot run region by region (a TensorRT engine)."""
    base = getattr(runner, "runner", runner)  # a ChunkedRunner's runner
    name = getattr(runner, "name", "backend")
    model = getattr(base, "model", None)
    if getattr(base, "executor", None) is not None:
        return ExecutorRegions(base.executor, name=name)
    if isinstance(model, (str, Path)):
        return OnnxRuntimeRegions(model, "disabled", name=name)
    return None


def runner_tie_parity(
    qgm: GraphModule,
    runner: Any,
    feeds: Mapping[str, torch.Tensor],
    tolerance: TieTolerance | None = None,
    *,
    reference: TieReference | None = None,
    free_outputs: Mapping[str, torch.Tensor] | None = None,
) -> TieParityReport | None:
    """Tie-aware parity of an engine-side runner (network executor or ONNX Runtime, possibly chunked);
    ``None`` for runners that cannot run region by region (a TensorRT engine).

    ``reference`` / ``free_outputs`` (by output name) skip runs already made (see :func:`tie_parity`). For ONNX
    Runtime the report also carries the cosine of the default-optimized session ("ONNX Runtime deployment",
    advisory only).

    Example:
        >>> report = runner_tie_parity(qgm, NetworkExecutorRunner(network), {"x": x})   # doctest: +SKIP
    """
    backend = region_backend(runner)
    if backend is None:
        return None
    inputs = [feeds[n] for n in backend.input_names]
    free = None if free_outputs is None else [free_outputs[n] for n in backend.output_names]
    reference = reference or TieReference(qgm, inputs)
    report = tie_parity(qgm, backend, inputs, tolerance, reference=reference, free_outputs=free)
    if isinstance(backend, OnnxRuntimeRegions):
        deployed = OnnxRuntimeRegions(backend.path, "all", name="ONNX Runtime deployment", float16_rounding=False)
        outs = deployed.run(dict(zip(backend.input_names, inputs)))
        report.deployment_cosine = min(cosine_similarity(r, o.to(r.dtype)) for r, o in zip(reference.outputs, outs))
    return report


__all__ = [
    "DEPLOYMENT_ADVISORY_COSINE",
    "FLOAT16_FLIP_RATE",
    "FLOAT16_TIE_ULPS",
    "RegionResult",
    "TieParityReport",
    "TieReference",
    "TieTolerance",
    "compare_int8",
    "float16_ulp_exponent",
    "quantize_points",
    "region_backend",
    "region_layers",
    "runner_tie_parity",
    "tie_parity",
]
