"""The precision audit on real TensorRT plans: what the graph quantizes must run INT8 in the plan.

Each case builds a real network and reads TensorRT-RTX's own plan from the build log, so a placement or
converter mistake shows as a float conv in the plan, not as a guess."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.fx import GraphModule

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.plan.audit import PlanAudit, audit_plan
from tests.converters.qdq_graph import ao_reference

pytestmark = [
    pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"),
]


def _audit(gm: GraphModule, x: torch.Tensor, qgm_for_reasons: GraphModule | None = None) -> PlanAudit:
    specs = [InputSpec(n.name, tuple(x.shape)) for n in gm.graph.nodes if n.op == "placeholder"]
    builder, network, _ctx = network_from_graph_module(gm, specs, builder=create_builder())
    _, plan = engine_and_plan_from_network(builder, network, specs)
    assert plan is not None and plan.layers
    return audit_plan(network, plan, qgm_for_reasons)


@pytest.fixture(scope="module")
def mobilenet() -> tuple[torch.nn.Module, GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    x = torch.randn(2, 3, 96, 96)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    return model, qgm, x


def test_every_quantized_layer_of_mobilenet_runs_int8(mobilenet) -> None:
    _, qgm, x = mobilenet
    audit = _audit(qgm, x, qgm)
    counts = audit.counts()
    assert audit.passed, audit.gate_lines()
    # 52 convs + the classifier, all quantized by ftp.quantize_model, all Int8 in TensorRT's plan
    assert counts == {"quantized": 53, "int8_in_plan": 53, "failed": 0, "no_int8_kernel": 0, "kept_in_float": 0}
    assert audit.summary_line().startswith("TensorRT plan: 53/53 quantized convs and matmuls run INT8")
    assert not audit.unattributed  # every compute layer of the plan maps back to an FX node


def test_skipped_layer_is_listed_in_float_with_its_reason(mobilenet) -> None:
    model, _, x = mobilenet
    cfg = ftp.QuantConfig(show_progress=False, skip=("features.1.conv.1",))
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=cfg)
    audit = _audit(qgm, x, qgm)
    floats = [r for r in audit.rows if r.verdict == "float"]
    assert audit.passed
    assert [r.node for r in floats] == ["features_1_conv_1"]
    assert floats[0].plan_dtype == "Float" and "QuantConfig.skip" in floats[0].reason
    assert audit.counts()["int8_in_plan"] == 52


def test_torch_ao_graph_with_one_input_qdq_removed_fails_naming_the_conv() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 96, 96)
    ref = ao_reference(model, (x,))
    assert _audit(ref, x).passed
    conv = next(n for n in ref.graph.nodes if n.op == "call_module" and n.target == "layer2.0.conv2")
    dq = conv.args[0]
    assert dq.op == "call_method" and dq.target == "dequantize"
    conv.replace_input_with(dq, dq.args[0].args[0])  # the float tensor the Q/DQ pair rounded
    ref.graph.eliminate_dead_code()
    ref.recompile()
    audit = _audit(ref, x)
    assert not audit.passed
    (row,) = audit.failures
    assert row.node == "layer2_0_conv2" and row.graph == "half" and row.plan_dtype == "Float"
    (line,) = audit.gate_lines()
    assert line.startswith("FAIL plan audit: conv layer2_0_conv2 (engine layer layer2_0_conv2")
    assert "input activation is not quantized" in line


def test_conv_subclass_calling_f_conv2d_runs_int8() -> None:
    """An nn.Conv2d subclass whose forward pads and calls F.conv2d on its own parameters is a layer like any other."""

    class SamePadConv(torch.nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), self.weight, self.bias)

    model = torch.nn.Sequential(
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), SamePadConv(32, 32, 3), torch.nn.ReLU()
    ).eval()
    x = torch.randn(2, 16, 16, 16)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    audit = _audit(qgm, x, qgm)
    assert {r.node: (r.graph, r.plan_dtype, r.verdict) for r in audit.rows} == {
        "_0": ("int8", "Int8", "int8"),
        "_2": ("int8", "Int8", "int8"),
    }
    assert audit.passed and "2/2 quantized convs and matmuls run INT8" in audit.summary_line()


def test_convs_sharing_one_weight_fail_and_are_not_claimed() -> None:
    """One parameter used by two functional convs (a TridentNet-style branch pair, dilations 1 and 2) is no single
    layer's weight, so the quantizer leaves it float while placement quantizes the inputs: TensorRT runs both in
    float. The audit fails naming each, why, and the remedy, and the summary does not count them as INT8."""

    class TridentConv(torch.nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            near = torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)
            return near + torch.nn.functional.conv2d(x, self.weight, self.bias, padding=2, dilation=2)

    model = torch.nn.Sequential(
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), TridentConv(32, 32, 3), torch.nn.ReLU()
    ).eval()
    x = torch.randn(2, 16, 16, 16)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    audit = _audit(qgm, x, qgm)
    kinds = {r.node: (r.graph, r.plan_dtype, r.verdict) for r in audit.rows}
    fail = ("half", "Float", "fail")
    assert kinds == {"_0": ("int8", "Int8", "int8"), "conv2d": fail, "conv2d_1": fail}
    assert "1/3 quantized convs and matmuls run INT8" in audit.summary_line()
    first, second = audit.gate_lines()
    assert first.startswith("FAIL plan audit: conv conv2d ") and second.startswith("FAIL plan audit: conv conv2d_1")
    assert "weight stays float: its parameter '2.weight' is also used by other ops" in first
    assert "inside module '2' (TridentConv)" in first and "QuantConfig(skip=('conv2d',))" in first


def test_deconv_without_int8_kernel_is_reported_not_failed() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.ConvTranspose2d(32, 16, 2, stride=2)
    ).eval()
    x = torch.randn(2, 16, 16, 16)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    audit = _audit(qgm, x, qgm)
    deconv = next(r for r in audit.rows if r.kind == "deconv")
    assert deconv.graph == "int8"
    if trt_api.library_name() == "tensorrt_rtx":  # measured: TensorRT-RTX plans deconv as Float, Float
        assert deconv.plan_dtype == "Float" and deconv.verdict == "no_int8_kernel"
        assert audit.passed and any("no INT8 deconv kernel" in n for n in audit.notes())
    else:
        assert deconv.verdict == "int8"


def test_pt2e_graph_runs_int8_in_the_plan() -> None:
    """A PT2E graph (torch.export + TensorRTQuantizer + convert_pt2e) is audited from its network like ours."""
    pytest.importorskip("fx2trt_pipeline.pt2e", reason="torchao (the pt2e extra) is not installed")
    from tests.frontends.test_pt2e import pt2e_quantize

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    gm = pt2e_quantize(torchvision.models.resnet18().eval(), [x], dynamic=False)
    audit = _audit(gm, x)
    assert audit.passed, audit.gate_lines()
    assert audit.counts()["quantized"] == 21 and audit.counts()["int8_in_plan"] == 21  # 20 convs and the fc
