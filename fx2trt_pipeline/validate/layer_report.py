"""Converter parity, layer by layer: the simulated INT8 GraphModule against the network executor.

:func:`layer_parity` runs the simulated INT8 GraphModule and the network executor on the same inputs and
compares every network output and every intermediate value whose TensorRT layer is named after an FX node
(``<node>`` or ``<node>.<suffix>``). Both sides compute the same INT8 network, so anything below cosine
0.9999 is a converter (or executor) bug, and the first layer that diverges is where to look. Graphs
quantized by torch.ao or PT2E are evaluated with TensorRT's arithmetic (:mod:`.exact_reference`).
How much error quantization itself adds, layer by layer, is :mod:`.quant_error`.

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> from fx2trt_pipeline.network.network import network_from_graph_module
    >>> _, network, ctx = network_from_graph_module(qgm, [InputSpec("x", (2, 3, 16, 16))])
    >>> from fx2trt_pipeline.validate.layer_report import layer_parity
    >>> bool(layer_parity(qgm, network, (x,)))
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import GraphModule, Interpreter, Node

from fx2trt_pipeline.capture import flatten_outputs
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.executor.exact_reference import TensorRTArithmetic, is_foreign_quantized_graph
from fx2trt_pipeline.executor.network_executor import NetworkExecutor
from fx2trt_pipeline.validate.compare import (
    ComparisonResult,
    Tolerance,
    compare_outputs,
)

#: Both sides compute the same INT8 network (integer-exact conv / matmul on both): only float layers'
#: summation order and the rare Q rounding flip on a tie may differ, which stays far above 30 dB.
PARITY_TOLERANCE = Tolerance(min_cosine=0.9999, min_sqnr_db=30.0)


class _ValueCapture(Interpreter):
    """Runs a GraphModule and keeps the tensor value of each (wanted) node by node name."""

    def __init__(self, gm: GraphModule, names: set[str] | None = None) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.names = names
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor) and (self.names is None or n.name in self.names):
            # A copy: a later in-place op (ReLU(inplace=True), `out += identity`) would change it.
            # torch.ao's qint8 tensors are kept as their int8 values, what TensorRT's Q layer outputs.
            self.values[n.name] = (result.int_repr() if result.is_quantized else result).detach().clone()
        return result


class _ExactValueCapture(_ValueCapture, TensorRTArithmetic):
    """:class:`_ValueCapture` of a torch.ao / PT2E graph evaluated with TensorRT's arithmetic."""


def capture_node_values(
    gm: GraphModule, inputs: Sequence[torch.Tensor], names: set[str] | None = None
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Run ``gm`` on ``inputs``; return ``({node name: tensor}, flattened outputs)``.

    Graphs quantized by torch.ao or PT2E run with TensorRT's arithmetic (exact int8 sums, ``x / s``
    half-to-even quantize: :mod:`.exact_reference`); their float32 arithmetic flips rounding ties that no
    integer-exact engine flips. This project's own quantized graphs run as they are.

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.ReLU()))
        >>> values, outs = capture_node_values(gm, [torch.tensor([-1.0, 2.0])])
        >>> values["_0"].tolist(), outs[0].tolist()
        ([0.0, 2.0], [0.0, 2.0])
    """
    capture = _ExactValueCapture if is_foreign_quantized_graph(gm) else _ValueCapture
    interpreter = capture(gm, names)
    with torch.no_grad():
        result = interpreter.run(*inputs)
    return interpreter.values, flatten_outputs(result)


# ------------------------------------------------------------------------------------- (a) parity


@dataclass
class ParityReport:
    """Simulated GraphModule vs network executor; truthy when outputs and intermediates all pass.

    Attributes:
        outputs: comparison of the network outputs (in graph-output order).
        layers: comparison of intermediate values, keyed by FX node name, in graph order.
        layer_of: the TensorRT layer compared for each node.
    """

    outputs: ComparisonResult
    layers: ComparisonResult
    layer_of: dict[str, str]

    def __bool__(self) -> bool:
        return bool(self.outputs) and bool(self.layers)

    def first_divergence(self) -> str | None:
        """The first node (graph order) whose layer fails its tolerance, or ``None``."""
        return next((s.name for s in self.layers if not s.passed), None)

    def to_json(self, indent: int | None = 2) -> str:
        """Both comparisons and the node -> layer map as JSON."""
        return json.dumps(
            {
                "passed": bool(self),
                "outputs": self.outputs.to_dict(),
                "layers": self.layers.to_dict(),
                "layer_of": self.layer_of,
                "first_divergence": self.first_divergence(),
            },
            indent=indent,
        )

    def __str__(self) -> str:
        first = self.first_divergence()
        tail = f"\nfirst diverging layer: {first} (TensorRT layer {self.layer_of[first]!r})" if first else ""
        return f"{self.outputs}\n\nintermediate layers ({len(self.layers.outputs)}):\n{self.layers}{tail}"


def _match_layers(
    node_values: Mapping[str, torch.Tensor], captured: Mapping[str, torch.Tensor], layer_names: Sequence[str]
) -> dict[str, str]:
    """Node name -> the layer holding its value: the last layer named ``node`` or ``node.*`` (network
    order) whose output has the node's shape (a converter's final layer produces the node's value)."""
    by_node: dict[str, list[str]] = {}
    for name in layer_names:
        by_node.setdefault(name.split(".", 1)[0], []).append(name)
    matched = {}
    for node, value in node_values.items():
        fits = [la for la in by_node.get(node, []) if tuple(captured[la].shape) == tuple(value.shape)]
        if fits:
            matched[node] = fits[-1]
    return matched


def _feeds(
    executor: NetworkExecutor, inputs: Sequence[torch.Tensor] | Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    if isinstance(inputs, Mapping):
        return dict(inputs), [inputs[n] for n in executor.input_names]
    if len(inputs) != len(executor.input_names):
        raise ConfigError(f"{len(inputs)} inputs given; the network has {executor.input_names}")
    return dict(zip(executor.input_names, inputs)), list(inputs)


def layer_parity(
    qgm: GraphModule,
    network: Any,
    inputs: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    tolerance: Tolerance | None = None,
) -> ParityReport:
    """Compare the simulated GraphModule with the network executor, outputs and layer by layer.

    Args:
        qgm: the reference-quantized GraphModule the network was converted from.
        network: its ``INetworkDefinition`` (or a :class:`NetworkExecutor` over it).
        inputs: positional inputs (network input order) or feeds by network input name.
        tolerance: applied to outputs and intermediates. Default: cosine >= 0.9999 and SQNR >= 30 dB
            (cosine alone is blind to a wrong scale, e.g. a weight dequantized with 1.5x its scale).

    Returns:
        A :class:`ParityReport`, truthy when everything passes.

    Example:
        >>> import torch, fx2trt_pipeline as ftp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
        >>> x = torch.randn(2, 3, 16, 16)
        >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
        >>> from fx2trt_pipeline.network.inputs import InputSpec
        >>> from fx2trt_pipeline.network.network import network_from_graph_module
        >>> _, network, ctx = network_from_graph_module(qgm, [InputSpec("x", (2, 3, 16, 16))])
        >>> report = layer_parity(qgm, network, (torch.randn(2, 3, 16, 16),))
        >>> assert report, str(report)
    """
    executor = network if isinstance(network, NetworkExecutor) else NetworkExecutor(network)
    feeds, positional = _feeds(executor, inputs)
    values, sim_outputs = capture_node_values(qgm, positional)
    outputs, captured = executor.run(feeds, capture="all")
    if len(sim_outputs) != len(executor.output_names):
        raise ConfigError(
            f"The GraphModule returns {len(sim_outputs)} tensors but the network has "
            f"{len(executor.output_names)} outputs"
        )
    tol = tolerance or PARITY_TOLERANCE
    out_result = compare_outputs(
        dict(zip(executor.output_names, sim_outputs)), outputs, tol, ref_name="simulated", test_name="network_executor"
    )
    computed = {k: v for k, v in values.items() if k in {n.name for n in qgm.graph.nodes if n.op != "get_attr"}}
    layer_of = _match_layers(computed, captured, [name for name, _ in executor.layers])
    layer_result = compare_outputs(
        {n: computed[n] for n in computed if n in layer_of},
        {n: captured[layer] for n, layer in layer_of.items()},
        tol,
        ref_name="simulated",
        test_name="network_executor",
    )
    return ParityReport(out_result, layer_result, layer_of)
