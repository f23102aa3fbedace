"""QDQ ONNX export: checker-valid, runs in ONNX Runtime like the simulated model, parses and builds
with TensorRT's OnnxParser; clear errors for what cannot be exported; atomic writes."""

from __future__ import annotations

import os

import pytest
import torch

from fx2trt_pipeline.errors import ExportError
from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
from fx2trt_pipeline.quantize import qdq_ops
from fx2trt_pipeline.validate.compare import Tolerance, compare_outputs
from fx2trt_pipeline.validate.runners import NetworkExecutorRunner, OnnxRuntimeRunner, TorchRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _qdq_nodes(model):
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def _initializer(model, name):
    return next((onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name), None)


def test_hand_written_qdq_conv_exports_with_int8_zero_points_and_axis(tmp_path, qdq_conv_gm):
    path = export_qdq_onnx(
        qdq_conv_gm, (torch.randn(1, 3, 8, 8),), tmp_path / "conv.onnx", input_names=["images"], output_names=["scores"]
    )
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == ["scores"]
    qdq = _qdq_nodes(model)
    assert [n.op_type for n in qdq].count("QuantizeLinear") == 1 and len(qdq) == 3
    for node in qdq:
        zero_point = _initializer(model, node.input[2])
        scale = _initializer(model, node.input[1])
        assert zero_point is not None and zero_point.dtype.name == "int8" and not zero_point.any()
        assert zero_point.shape == scale.shape
    weight_dq = next(n for n in qdq if _initializer(model, n.input[0]) is not None)
    assert _initializer(model, weight_dq.input[0]).dtype.name == "int8"  # not folded into a float weight
    assert {a.name: a.i for a in weight_dq.attribute}["axis"] == 0
    assert not [p for p in os.listdir(tmp_path) if p != "conv.onnx"]  # no temporary files left


def test_quantized_model_in_onnxruntime_matches_simulated(tmp_path, tiny_quantized):
    _, qgm = tiny_quantized
    path = export_qdq_onnx(
        qgm,
        (torch.randn(1, 3, 16, 16),),
        tmp_path / "tiny.onnx",
        input_names=["x"],
        output_names=["logits", "features"],
        dynamic_batch=True,
    )
    ort = OnnxRuntimeRunner(path)
    shape = onnx.load(path).graph.input[0].type.tensor_type.shape
    assert shape.dim[0].dim_param == "batch" and [d.dim_value for d in shape.dim[1:]] == [3, 16, 16]
    feeds = {"x": torch.randn(4, 3, 16, 16)}
    simulated = TorchRunner(qgm, ["x"], ["logits", "features"], name="simulated").run(feeds)
    result = compare_outputs(simulated, ort.run(feeds), Tolerance(min_cosine=0.9999))
    assert result, str(result)
    n_q = sum(qdq_ops.is_quantize(n) for n in qgm.graph.nodes)
    assert [n.op_type for n in onnx.load(path).graph.node].count("QuantizeLinear") == n_q


def test_tensorrt_onnx_parser_parses_and_builds(tmp_path, trt, tiny_quantized):
    _, qgm = tiny_quantized
    path = export_qdq_onnx(
        qgm,
        (torch.randn(2, 3, 16, 16),),
        tmp_path / "tiny.onnx",
        input_names=["x"],
        output_names=["logits", "features"],
        dynamic_batch=True,
    )
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    types = {network.get_layer(i).type.name for i in range(network.num_layers)}
    assert {"QUANTIZE", "DEQUANTIZE", "CONVOLUTION", "DECONVOLUTION"} <= types
    # The parsed network computes what the simulated model computes (executed on CPU).
    feeds = {"x": torch.randn(3, 3, 16, 16)}
    simulated = TorchRunner(qgm, ["x"], ["logits", "features"]).run(feeds)
    assert compare_outputs(simulated, NetworkExecutorRunner(network).run(feeds))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None


def test_torch_ao_quantized_tensors_are_refused_by_node(tmp_path):
    class AoModel(torch.nn.Module):
        def forward(self, x):
            q = torch.quantize_per_tensor(x, 0.1, 0, torch.qint8)
            return q.dequantize()

    gm = torch.fx.symbolic_trace(AoModel())
    target = tmp_path / "ao.onnx"
    with pytest.raises(ExportError) as info:
        export_qdq_onnx(gm, (torch.randn(2, 3),), target)
    message = str(info.value)
    assert "2 node(s) cannot be exported" in message
    assert "quantize_per_tensor (quantize_per_tensor)" in message and "dequantize (dequantize)" in message
    assert not target.exists()


def test_foreign_custom_op_is_refused_and_existing_file_kept(tmp_path):
    @torch.library.custom_op("validate_test::mystery", mutates_args=())
    def mystery(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    class Model(torch.nn.Module):
        def forward(self, x):
            return torch.ops.validate_test.mystery(x) + 1

    gm = torch.fx.symbolic_trace(Model())
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ExportError, match="validate_test"):
        export_qdq_onnx(gm, (torch.randn(2),), target)
    assert target.read_bytes() == b"previous"


def test_old_opset_is_refused(tmp_path, qdq_conv_gm):
    with pytest.raises(ExportError, match="opset 10"):
        export_qdq_onnx(qdq_conv_gm, (torch.randn(1, 3, 8, 8),), tmp_path / "m.onnx", opset=10)


@pytest.mark.parametrize("opset", [17, 18, 20])
def test_the_written_opset_is_the_one_asked_for_or_refused(tmp_path, tiny_quantized, opset):
    """The exporter writes 18 or later; 17 used to come out as 18 silently, now it is refused."""
    _, qgm = tiny_quantized
    if opset < 18:
        with pytest.raises(ExportError, match="opset 17 cannot be written.*opset=18"):
            export_qdq_onnx(qgm, (torch.randn(1, 3, 16, 16),), tmp_path / "m.onnx", opset=opset)
        return
    path = export_qdq_onnx(qgm, (torch.randn(1, 3, 16, 16),), tmp_path / "m.onnx", opset=opset)
    assert [o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")] == [opset]
