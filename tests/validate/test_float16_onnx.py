"""QDQ ONNX of float16 builds: ONNX Runtime is a sound, passing tie-aware parity check that still fails.

MobileNetV2 with its real ImageNet weights (96 px photo crops, minmax): the INT8 layers export as float32
Conv / Gemm on float32 dequantized values, then a Cast to float16 and the float16 bias (the simulated epilogue
up to float32 summation order); ONNX Runtime runs the file with its float16 roundings made explicit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fx2trt_pipeline as ftp
from fx2trt_pipeline.validate.tie_parity import TieTolerance, compare_int8, float16_ulp_exponent, tie_parity
from fx2trt_pipeline.validate.tie_regions import OnnxRuntimeRegions, explicit_float16_rounding

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
mobilenet = pytest.importorskip("fx2trt_pipeline.models.mobilenet_v2_imagenet")
from fx2trt_pipeline.export.onnx_export import export_qdq_onnx  # noqa: E402
from tests.validate import tamper  # noqa: E402

SIZE, BATCH = 96, 8
TOLERANCE = TieTolerance(noise_flips=0)


@pytest.fixture(scope="module")
def fp16_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    try:
        model = mobilenet.mobilenet_v2_imagenet()
    except Exception as exc:  # the weights package is an optional extra
        pytest.skip(f"MobileNetV2 weights unavailable: {exc}")
    x = mobilenet.photo_samples(BATCH, size=SIZE, seed=0)
    cfg = ftp.QuantConfig(show_progress=False, calibrator="minmax", float_dtype="float16")
    prepared = ftp.prepare(model, (x[:2],), cfg)
    ftp.calibrate(prepared, list(mobilenet.photo_samples(16, size=SIZE, seed=1).split(8)))
    qgm = ftp.convert(prepared, cfg)
    path = export_qdq_onnx(qgm, (x,), tmp_path_factory.mktemp("f16") / "mnv2.onnx", input_names=["x"])
    return {"qgm": qgm, "x": x, "path": path}


def test_int8_layers_export_as_float32_op_cast_then_float16_bias(fp16_build: dict) -> None:
    graph = onnx.load(str(fp16_build["path"])).graph
    producers = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for v in n.input:
            consumers.setdefault(v, []).append(n)
    ops = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(ops) == 53
    for op in ops:
        # Both operands straight from DequantizeLinear (float32 q * s, exact), no bias input.
        assert [producers[v].op_type for v in op.input] == ["DequantizeLinear"] * 2, op.name
        (cast,) = consumers[op.output[0]]
        assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT16
        (add,) = consumers[cast.output[0]]
        assert add.op_type == "Add"


def test_onnxruntime_tie_parity_passes(fp16_build: dict) -> None:
    qgm, x = fp16_build["qgm"], fp16_build["x"]
    report = tie_parity(qgm, OnnxRuntimeRegions(fp16_build["path"]), (x,), TOLERANCE)
    # Measured (docs/float16.md): 7 one-step flips, all within the float16 tie window; cosine 0.9973.
    assert report, str(report)
    flips = sum(r.flips for r in report.regions)
    assert flips == report.tie_flips <= 30, str(report)
    assert report.end_to_end_cosine > 0.99, report.summary()
    assert min(r.sqnr_db for r in report.outputs) > 100, report.summary()


def test_tampered_weight_scale_fails_naming_the_layer(fp16_build: dict, tmp_path: Path) -> None:
    path = tamper.tampered_copy(fp16_build["path"], tmp_path / "t.onnx", tamper.scale_weight, "features_4_conv_1_0")
    report = tie_parity(fp16_build["qgm"], OnnxRuntimeRegions(path), (fp16_build["x"],), TOLERANCE)
    assert not report
    first = report.first_failure()
    assert first is not None and "features_4_conv_1_0" in first.layers, str(report)


def test_explicit_rounding_keeps_the_round_onnxruntime_drops() -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 8, 5, 5)) * 0.3).astype(np.float32)
    b = (rng.standard_normal((8, 1, 1)) * 0.3).astype(np.float16)
    nodes = [
        helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
        helper.make_node("Add", ["h", "b"], ["s"]),
        helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    want = (torch.from_numpy(x).half() + torch.from_numpy(b)).float()

    def run(m: object) -> torch.Tensor:
        from fx2trt_pipeline.validate.tie_regions import ort_session

        return torch.from_numpy(ort_session(m.SerializeToString(), "disabled").run(None, {"x": x})[0])

    assert not torch.equal(run(model), want)  # ONNX Runtime cancels its own casts against ours
    assert explicit_float16_rounding(model)
    assert torch.equal(run(model), want)


def test_float16_window_only_where_the_input_is_float16() -> None:
    ref = torch.tensor([2, 4], dtype=torch.int8)
    own = torch.tensor([3, 4], dtype=torch.int8)
    pre = torch.tensor([2.49, 4.0])  # 0.01 steps from the tie: outside tie_window
    assert not compare_int8("q", (), own, ref, pre, 1e-3).passed
    window = torch.tensor([0.02, 0.02])
    assert compare_int8("q", (), own, ref, pre, 1e-3, window).passed
    assert not compare_int8("q", (), torch.tensor([4, 4], dtype=torch.int8), ref, pre, 1e-3, window).passed
    exponents = float16_ulp_exponent(torch.tensor([1.0, 3.0, 0.0, 1e-7], dtype=torch.float16)).tolist()
    assert exponents == [-10, -9, -24, -24]
