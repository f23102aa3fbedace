"""TensorRT's plan as data: the builder-log and inspector-JSON parsers, node attribution, and the figures of a
real build checked against the model's own shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.engine_plan import EnginePlan, PlanLayer, PlanTensor, attribute_nodes, plan_path
from fx2trt_pipeline.engine.plan_parse import parse_layer_line, plan_from_build_log, plan_from_inspector_json
from fx2trt_pipeline.errors import EngineBuildError
from fx2trt_pipeline.network.inputs import InputSpec

LINE = (
    "Name: features_1_conv_1_U172_myl0_6, LayerType: correlation, Inputs: [ { Name: __mye6027features_1_conv_1_"
    "before_bias.1_59_myl0, Dimensions: [-1,32,112,112], Strides: [401408,1,3584,32], StrideOrder: [3,0,2,1], "
    "Datatype: Int8, Format: (NHWC) Channel major format }], Constants: [ { Name: __mye11564dconst_myl0, "
    "Dimensions: [16,32,1,1], Strides: [32,1,32,32], StrideOrder: [3,0,2,1], Datatype: Int8, Format: (NHWC) Channel "
    "major format }, { Name: __mye11569dconst_myl0, Dimensions: [1,16,1,1], Strides: [16,1,16,16], StrideOrder: "
    "[3,0,2,1], Datatype: Float, Format: (NHWC) Channel major format }], Outputs: [ { Name: __myln_k_arg__bb1_60_myl0,"
    " Dimensions: [-1,16,112,112], Strides: [200704,1,1792,16], StrideOrder: [3,0,2,1], Datatype: Float, Format: "
    "(NHWC) Channel major format }], TacticName: __myelin_CASK_STUB, StreamId: 0, Metadata: "
)


def test_a_logged_layer_line_reads_back_exactly() -> None:
    layer = parse_layer_line(LINE)
    assert (layer.name, layer.type, layer.tactic) == (
        "features_1_conv_1_U172_myl0_6",
        "correlation",
        "__myelin_CASK_STUB",
    )
    assert [t.dims for t in layer.inputs] == [(-1, 32, 112, 112)]
    assert [(t.dims, t.dtype) for t in layer.constants] == [((16, 32, 1, 1), "Int8"), ((1, 16, 1, 1), "Float")]
    assert layer.outputs[0].dtype == "Float" and layer.outputs[0].format == "(NHWC) Channel major format"
    # 1x1 conv 32 -> 16 over 112 x 112, batch 2: MACs from the shapes by hand
    assert layer.macs(2) == 2 * 16 * 112 * 112 * 32
    assert layer.nbytes(1) == 32 * 112 * 112 * 1 + 16 * 112 * 112 * 4 + 16 * 32 + 16 * 4
    with pytest.raises(EngineBuildError, match="Cannot read this engine layer line"):
        parse_layer_line("Layers are fun")


def test_the_plan_ends_at_the_blank_line_and_needs_the_layers_message() -> None:
    text = f"Layers:\n{LINE}\nName: __mye1_0_myl0_0, LayerType: shape_call, Inputs: [], Constants: [], Outputs: [], "
    text += "TacticName: , StreamId: 0, Metadata: \n\nI/O Tensors:\n Name: x, IOMode: Input"
    plan = plan_from_build_log([("INFO", "other"), ("VERBOSE", text)], batch=1)
    assert [layer.type for layer in plan.layers] == ["correlation", "shape_call"]
    assert plan.summary()["engine_layers"] == 1  # shape_call is host work, not a kernel
    with pytest.raises(EngineBuildError, match="profiling_verbosity='DETAILED'"):
        plan_from_build_log([("INFO", "no plan here")])


def test_inspector_json_of_a_datacenter_engine() -> None:
    """The IEngineInspector layout (LayerType CaskConvolution, Format/Datatype strings, weights as type + count)."""
    data = {
        "Layers": [
            {
                "Name": "conv1 + relu",
                "LayerType": "CaskConvolution",
                "Inputs": [
                    {
                        "Name": "x_q",
                        "Dimensions": [4, 64, 56, 56],
                        "Format/Datatype": "Channel major INT8 format where channel % 32 == 0",
                    }
                ],
                "Outputs": [
                    {"Name": "y", "Dimensions": [4, 64, 56, 56], "Format/Datatype": "Row major linear FP16 format"}
                ],
                "Weights": {"Type": "Int8", "Count": 36864},
                "Bias": {"Type": "Float", "Count": 64},
                "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8",
            },
            {"Name": "pool", "LayerType": "CaskPooling", "Inputs": [], "Outputs": []},
        ]
    }
    plan = plan_from_inspector_json(json.dumps(data), batch=4)
    conv = plan.layers[0]
    assert (conv.compute_kind, conv.compute_dtype, conv.outputs[0].dtype) == ("conv", "Int8", "Half")
    assert conv.macs(4) == 4 * 64 * 56 * 56 * 36864 // 64  # 3x3x64 per output element
    assert plan.source == "engine inspector"
    with pytest.raises(EngineBuildError, match="no 'Layers' list"):
        plan_from_inspector_json("{}")


def test_node_attribution_takes_whole_names_only() -> None:
    names = {"features_1_conv_1": "features_1_conv_1", "features_1_conv_10": "features_1_conv_10", "x_q": "x_q"}
    layers = [
        PlanLayer(
            "features_1_conv_10_U1_myl0_3",
            "correlation",
            (PlanTensor("__mye12features_1_conv_1_before_bias", (1,), "Int8"),),
        ),
        PlanLayer("__myl_MaxQ_myl0_4", "kgen", (PlanTensor("relax_q", (1,), "Float"),)),
    ]
    attributed = attribute_nodes(layers, names)
    assert attributed[0].nodes == ("features_1_conv_10", "features_1_conv_1")  # own name first
    assert attributed[1].nodes == ()  # "x_q" inside "relax_q" is not a name


@pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")
def test_dynamic_batch_build_records_exact_dims_of_a_token_linear(tmp_path: Path) -> None:
    """A linear over batch x tokens: a dynamic plan would log it (-1, C); the recorded plan has the opt shape's dims,
    so its MACs are the model's own count."""

    class Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(64, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(2).transpose(1, 2))  # (B, 64, 7, 7) -> (B, 49, 64) -> (B, 49, 32)

    x = torch.randn(4, 64, 7, 7)
    qgm = ftp.quantize_model(Tokens().eval(), [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    spec = InputSpec.dynamic_batch("x", (64, 7, 7), min_batch=1, opt_batch=4, max_batch=8)
    art = ftp.build_engine(qgm, [spec], tmp_path / "m.plan")
    plan = EnginePlan.read(plan_path(art.engine_path))
    assert plan.batch == 4 and all(-1 not in t.dims for layer in plan.layers for t in (*layer.inputs, *layer.outputs))
    (gemm,) = plan.compute_layers()
    assert gemm.compute_dtype == "Int8" and gemm.nodes[0] == "fc"
    assert gemm.macs(plan.batch) == 4 * 49 * 64 * 32
    assert any("opt shape [[4, 64, 7, 7]]" in note for note in plan.notes)
    assert json.loads(art.metadata_path.read_text())["plan"]["int8_compute_layers"] == 1
