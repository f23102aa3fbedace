"""network_from_graph_module / find_unsupported: check-all-before-convert, errors, inputs and outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError, ConversionError, InternalError, UnsupportedOpsError
from fx2trt_pipeline.network.context import ConversionContext
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import find_unsupported, network_from_graph_module
from tests.converters.harness import check_names, convert_gm, trace_module
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")


class Several(nn.Module):
    """Three unsupported ops between supported ones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gru = nn.GRU(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.lgamma(self.conv(x))
        y = F.mish(y)
        return y.cumsum(1)


def traced_with_stack(module: nn.Module) -> torch.fx.GraphModule:
    tracer = torch.fx.Tracer()
    tracer.record_stack_traces = True
    return torch.fx.GraphModule(module, tracer.trace(module))


def test_find_unsupported_lists_every_node_with_reason_and_source_line() -> None:
    rows = find_unsupported(traced_with_stack(Several()))
    assert [(r[0], r[1]) for r in rows] == [
        ("lgamma", "torch.lgamma"),
        ("mish", "torch.nn.functional.mish"),
        ("cumsum", "Tensor.cumsum"),
    ]
    assert all(r[2] == "no converter registered for this target" for r in rows)
    assert all("test_network.py" in r[3] for r in rows), rows


def test_unsupported_ops_raise_before_any_tensorrt_object(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tensorrt() -> None:
        raise AssertionError("TensorRT was touched before the graph was checked")

    monkeypatch.setattr(trt_api, "get_trt", no_tensorrt)
    with pytest.raises(UnsupportedOpsError) as info:
        network_from_graph_module(torch.fx.symbolic_trace(Several()), [InputSpec("x", (1, 3, 8, 8))])
    assert len(info.value.rows) == 3
    message = str(info.value)
    assert "3 node(s)" in message and "lgamma" in message and "mish" in message and "cumsum" in message


def test_refusals_and_missing_converters_are_reported_together() -> None:
    gm = trace_module(Fn(lambda m, x: F.softmax(torch.lgamma(x)) + F.interpolate(x, scale_factor=2, mode="area")))
    reasons = {r[0]: r[2] for r in find_unsupported(gm)}
    assert set(reasons) == {"lgamma", "softmax", "interpolate"}
    assert "explicit int dim" in reasons["softmax"] and "area" in reasons["interpolate"]


def test_conversion_failure_names_the_node() -> None:
    gm = trace_module(nn.AdaptiveAvgPool2d(3))
    with pytest.raises(ConversionError) as info:
        network_from_graph_module(gm, [InputSpec("x", (1, 2, 7, 7))])
    message = str(info.value)
    assert "'op'" in message and "%op : [num_users=1] = call_module[target=op]" in message
    assert "Remedy" in message and isinstance(info.value.__cause__, ConversionError)


def test_network_is_strongly_typed_with_named_dynamic_inputs() -> None:
    trt = trt_api.get_trt()
    gm = trace_module(nn.Conv2d(3, 4, 3))
    spec = InputSpec.dynamic_batch("images", (3, 8, 8), 1, 2, 4)
    _, network, ctx = network_from_graph_module(gm, [spec], output_names=["logits"])
    assert network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert network.get_input(0).name == "images" and tuple(network.get_input(0).shape) == (-1, 3, 8, 8)
    assert network.get_output(0).name == "logits"
    assert ctx.layers == {"op": "op"}


def test_input_and_output_name_mismatches_are_config_errors() -> None:
    gm = trace_module(nn.ReLU())
    with pytest.raises(ConfigError, match="1 input"):
        network_from_graph_module(gm, [InputSpec("a", (1, 2)), InputSpec("b", (1, 2))])
    with pytest.raises(ConfigError, match="output name"):
        network_from_graph_module(gm, [InputSpec("a", (1, 2))], output_names=["y", "z"])


def test_outputs_that_are_inputs_or_repeated_get_their_own_tensor() -> None:
    gm = trace_module(Fn(lambda m, x: (x, torch.relu(x), torch.relu(x) * 1, x)))
    converted = convert_gm(gm, (torch.randn(2, 3),))
    names = [converted.network.get_output(i).name for i in range(converted.network.num_outputs)]
    assert names == ["output0", "output1", "output2", "output3"]
    assert converted.layer_types()["IDENTITY"] == 2  # both outputs that are the network input


def test_python_value_output_is_refused() -> None:
    gm = trace_module(Fn(lambda m, x: x.size(1)))
    with pytest.raises(ConversionError, match="not a tensor"):
        network_from_graph_module(gm, [InputSpec("x", (2, 3))])


def test_every_layer_of_a_multi_layer_converter_is_named_after_its_node() -> None:
    gm = trace_module(Fn(lambda m, x: F.silu(x).view(x.size(0), -1)))
    spec = InputSpec.dynamic_batch("x", (3, 4), 1, 2, 4)
    _, network, ctx = network_from_graph_module(gm, [spec])
    check_names(gm, network)
    names = [network.get_layer(i).name for i in range(network.num_layers)]
    assert "silu" in names and "silu.gate" in names and "view" in names
    assert any(n.startswith("size.") or n.startswith("view.") for n in names)


def test_layer_names_must_be_unique_and_start_with_a_node() -> None:
    gm = trace_module(nn.ReLU())
    _, network, ctx = network_from_graph_module(gm, [InputSpec("x", (1, 2))])
    assert isinstance(ctx, ConversionContext)
    with pytest.raises(InternalError, match="Two layers named"):
        ctx.add(network.add_identity(network.get_input(0)), "op")
    with pytest.raises(InternalError, match="FX node name"):
        ctx.add(network.add_identity(network.get_input(0)), "not_a_node.x")
