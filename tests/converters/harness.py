"""Shared converter test harness: trace a small module, optionally quantize it by hand, convert it,
build it with the real TensorRT(-RTX) builder and check the real network.

Checks on every case:
* ``builder.build_serialized_network`` returns an engine (via ``engine_bytes_from_network``);
* every layer name maps to an FX node (no default ``(Unnamed Layer* N)`` names);
* Q/DQ layer counts equal the graph's Q/DQ node counts;
* conv / deconv kernels given as tensors come from an IDequantizeLayer over an int8 constant;
* expected layer-type counts;
* the network executor's output matches eager torch on the GraphModule (cosine >= 0.9999 and allclose).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.capture import flatten_outputs
from fx2trt_pipeline.converters.registry import key_of
from fx2trt_pipeline.executor.network_executor import NetworkExecutor
from fx2trt_pipeline.network.context import ConversionContext, node_name_of_layer
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import network_from_graph_module
from tests.converters.qdq_graph import lower_weights, qdq_node_counts, quantize_inputs


@dataclass
class OpCase:
    """One converter test case.

    Attributes:
        id: pytest id.
        make: builds the module (eval mode is applied by the harness).
        inputs: example input shapes (float32 randn) or a callable returning example tensors.
        quantize: wrap float inputs in Q/DQ and lower conv / deconv / linear weights to int8 + DQ.
        deconv_axis: per-channel axis of lowered ConvTranspose weights.
        dynamic_batch: make dim 0 of every input dynamic (min 1, opt / max from the example batch).
        layers: expected layer-type counts (a subset check, e.g. ``{"CONVOLUTION": 1}``).
        atol, rtol: allclose tolerances for the executor comparison.
        trace: custom tracer returning the GraphModule (default ``torch.fx.symbolic_trace``).
    """

    id: str
    make: Callable[[], nn.Module]
    inputs: Any = ((2, 4, 8, 8),)
    quantize: bool = False
    deconv_axis: int = 0
    dynamic_batch: bool = False
    layers: dict[str, int] = field(default_factory=dict)
    atol: float = 1e-4
    rtol: float = 1e-4
    trace: Callable[[nn.Module], GraphModule] | None = None


@dataclass
class Converted:
    """What the harness produced for one case (for extra assertions in tests)."""

    gm: GraphModule
    network: Any
    ctx: ConversionContext
    engine: bytes
    example: tuple[torch.Tensor, ...]
    specs: list[InputSpec]

    def layer_types(self) -> Counter:
        """Counts of LayerType names in the network."""
        return Counter(layer_type(self.network.get_layer(i)) for i in range(self.network.num_layers))

    def layers_of(self, kind: str) -> list[Any]:
        """Layers of one LayerType name."""
        return [
            self.network.get_layer(i)
            for i in range(self.network.num_layers)
            if layer_type(self.network.get_layer(i)) == kind
        ]


def layer_type(layer: Any) -> str:
    """``layer.type`` name, read before any concrete-class cast (after one, ``type`` on IActivationLayer /
    IPoolingLayer is the activation / pooling kind)."""
    return layer.type.name


def example_inputs(case: OpCase) -> tuple[torch.Tensor, ...]:
    """Deterministic example tensors for a case."""
    if callable(case.inputs):
        return tuple(case.inputs())
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(shape, generator=gen) for shape in case.inputs)


class Root(nn.Module):
    """Holds the module under test as ``op`` so that a module becomes a ``call_module`` node named ``op``."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: Any) -> Any:
        return self.op(x)


class Root2(Root):
    """:class:`Root` for two inputs (FX cannot trace ``*inputs``)."""

    def forward(self, x: Any, y: Any) -> Any:  # type: ignore[override]
        return self.op(x, y)


class Root3(Root):
    """:class:`Root` for three inputs."""

    def forward(self, x: Any, y: Any, z: Any) -> Any:  # type: ignore[override]
        return self.op(x, y, z)


def trace_module(module: nn.Module, num_inputs: int = 1) -> GraphModule:
    """``symbolic_trace`` of ``module`` held as ``op`` (so modules become ``call_module`` nodes)."""
    return torch.fx.symbolic_trace((Root, Root2, Root3)[num_inputs - 1](module).eval())


def graph_of(case: OpCase) -> tuple[GraphModule, tuple[torch.Tensor, ...]]:
    """The (optionally hand-quantized) GraphModule of a case and its example inputs."""
    example = example_inputs(case)
    module = (Root, Root2, Root3)[len(example) - 1](case.make()).eval()
    gm = case.trace(module) if case.trace is not None else torch.fx.symbolic_trace(module)
    if case.quantize:
        gm = lower_weights(quantize_inputs(gm, example), case.deconv_axis)
    return gm, example


def input_specs(example: Sequence[torch.Tensor], dynamic_batch: bool) -> list[InputSpec]:
    """One InputSpec per example tensor (``x0, x1, ...``), dim 0 dynamic when asked."""
    specs = []
    for i, t in enumerate(example):
        if dynamic_batch:
            n = t.shape[0]
            specs.append(InputSpec.dynamic_batch(f"x{i}", tuple(t.shape[1:]), 1, n, max(n, 2), t.dtype))
        else:
            specs.append(InputSpec.from_tensor(f"x{i}", t))
    return specs


def build_engine_bytes(converted_builder: Any, network: Any, specs: Sequence[InputSpec]) -> bytes:
    """Build with the real builder (an optimization profile for dynamic inputs); fails the test on None."""
    from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network

    data = engine_bytes_from_network(converted_builder, network, list(specs))
    assert data is not None and len(data) > 0
    return bytes(data)


def convert_gm(gm: GraphModule, example: tuple[torch.Tensor, ...], dynamic_batch: bool = False) -> Converted:
    """Convert and build a GraphModule; run the structural checks."""
    specs = input_specs(example, dynamic_batch)
    builder, network, ctx = network_from_graph_module(gm, specs)
    check_names(gm, network)
    check_qdq_counts(gm, network)
    check_kernels(network)
    engine = build_engine_bytes(builder, network, specs)
    return Converted(gm, network, ctx, engine, example, specs)


def run_case(case: OpCase) -> Converted:
    """The whole harness for one case (see module docstring); returns the result for extra checks."""
    gm, example = graph_of(case)
    converted = convert_gm(gm, example, case.dynamic_batch)
    types = converted.layer_types()
    for kind, count in case.layers.items():
        assert types[kind] == count, f"expected {count} {kind} layer(s), got {types[kind]}: {dict(types)}"
    compare_with_eager(converted, atol=case.atol, rtol=case.rtol)
    return converted


def check_names(gm: GraphModule, network: Any) -> None:
    """Every layer is named after an FX node (no TensorRT default names)."""
    nodes = {n.name for n in gm.graph.nodes}
    for i in range(network.num_layers):
        name = network.get_layer(i).name
        assert not name.startswith("(Unnamed"), f"layer {i} kept a default name: {name}"
        assert node_name_of_layer(name) in nodes, f"layer {name!r} does not map to an FX node"


def check_qdq_counts(gm: GraphModule, network: Any) -> None:
    """As many Q / DQ layers as Q / DQ nodes (reference modules add one weight DQ each)."""
    q_nodes, dq_nodes = qdq_node_counts(gm)
    dq_nodes += sum(1 for n in gm.graph.nodes if n.op == "call_module" and _is_quantized_reference(gm, n))
    types = Counter(layer_type(network.get_layer(i)) for i in range(network.num_layers))
    assert types["QUANTIZE"] == q_nodes, f"{types['QUANTIZE']} Q layers for {q_nodes} Q nodes"
    assert types["DEQUANTIZE"] == dq_nodes, f"{types['DEQUANTIZE']} DQ layers for {dq_nodes} DQ nodes"


def _is_quantized_reference(gm: GraphModule, node: Any) -> bool:
    module = gm.get_submodule(node.target)
    inner = module[0] if isinstance(module, nn.Sequential) and len(module) else module
    return hasattr(inner, "weight_dtype") and inner.weight_dtype == torch.qint8


def producers(network: Any) -> dict[str, Any]:
    """Tensor name -> producing layer."""
    out = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            out[layer.get_output(j).name] = layer
    return out


def kernel_source(network: Any, layer: Any) -> Any | None:
    """The layer feeding input 1 (the kernel) of a conv / deconv, looking through (un)squeeze reshapes."""
    made_by = producers(network)
    tensor = layer.get_input(1) if layer.num_inputs > 1 else None
    source = made_by.get(tensor.name) if tensor is not None else None
    while source is not None and layer_type(source) in ("UNSQUEEZE", "SHUFFLE"):
        source = made_by.get(source.get_input(0).name)
    return source


def check_kernels(network: Any) -> None:
    """A tensor kernel (input 1) of conv / deconv is an IDequantizeLayer over an int8 constant."""
    trt = trt_api.get_trt()
    made_by = producers(network)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer_type(layer) not in ("CONVOLUTION", "DECONVOLUTION") or layer.get_input(1) is None:
            continue
        source = kernel_source(network, layer)
        assert source is not None and layer_type(source) == "DEQUANTIZE", (
            f"{layer.name}: kernel input is not produced by an IDequantizeLayer"
        )
        int8 = made_by.get(source.get_input(0).name)
        assert int8 is not None and layer_type(int8) == "CONSTANT", f"{source.name}: DQ input is not a constant"
        assert int8.get_output(0).dtype == trt.int8, f"{int8.name}: kernel constant is not int8"


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors (1.0 for two all-zero tensors)."""
    a, b = a.double().flatten(), b.double().flatten()
    if a.norm() == 0 and b.norm() == 0:
        return 1.0
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def compare_with_eager(
    converted: Converted,
    atol: float | None = 1e-4,
    rtol: float | None = 1e-4,
    min_cosine: float = 0.9999,
) -> None:
    """Assert the executor's outputs match the GraphModule run in eager torch.

    ``atol=None`` checks the cosine only (graphs whose eager simulation rounds differently, e.g. torch.ao's).
    """
    feeds = {spec.name: t for spec, t in zip(converted.specs, converted.example)}
    outputs, _ = NetworkExecutor(converted.network).run(feeds)
    with torch.no_grad():
        expected = flatten_outputs(converted.gm(*[t.clone() for t in converted.example]))
    got = [outputs[converted.network.get_output(i).name] for i in range(converted.network.num_outputs)]
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert tuple(g.shape) == tuple(e.shape), f"output {i}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        g, e = g.to(e.dtype), e
        assert cosine(g, e) >= min_cosine, f"output {i}: cosine {cosine(g, e):.6f} < {min_cosine}"
        if atol is not None:
            torch.testing.assert_close(g, e, atol=atol, rtol=rtol, msg=lambda m, i=i: f"output {i}: {m}")


def registry_keys_in(gm: GraphModule) -> set[Any]:
    """Registry keys of the nodes of a graph (for the coverage test)."""
    return {key_of(n) for n in gm.graph.nodes if key_of(n) is not None}
