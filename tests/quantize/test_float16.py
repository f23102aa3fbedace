"""float16 float parts (QuantConfig.float_dtype="float16") on MobileNetV2 with its real ImageNet weights, 96 px.

The network must say float16 (every tensor that is not int8 is HALF, but for the float32 Q/DQ scales and
the I/O casts), TensorRT's plan must run the float parts in Half, the network executor must agree exactly
with the simulated model, and a tampered weight scale must still fail tie-aware parity.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter

import pytest
import torch

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.executor.network_executor import NetworkExecutor
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.quantize.float16 import float_cast
from fx2trt_pipeline.quantize.state import get_quant_state
from fx2trt_pipeline.validate.compare import cosine_similarity
from fx2trt_pipeline.validate.tie_parity import TieTolerance, tie_parity
from fx2trt_pipeline.validate.tie_regions import ExecutorRegions

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")
mobilenet = pytest.importorskip("fx2trt_pipeline.models.mobilenet_v2_imagenet")

SIZE, BATCH = 96, 8
#: No noise floor (three more runs of the simulated model): these tests read the verdict only.
TOLERANCE = TieTolerance(noise_flips=0)
#: Layers kept in float (mixed precision): a depthwise and a pointwise conv, and the classifier.
SKIP = ("features_1_conv_0_0", "features_16_conv_2", "classifier_1")


@pytest.fixture(scope="module")
def mnv2() -> dict:
    try:
        model = mobilenet.mobilenet_v2_imagenet()
    except Exception as exc:  # the weights package is an optional extra
        pytest.skip(f"MobileNetV2 weights unavailable: {exc}")
    x = mobilenet.photo_samples(BATCH, size=SIZE, seed=0)
    calib = list(mobilenet.photo_samples(16, size=SIZE, seed=1).split(8))
    base = ftp.QuantConfig(show_progress=False, calibrator="minmax")
    prepared = ftp.prepare(model, (x[:2],), base)
    ftp.calibrate(prepared, calib)
    out = {"model": model, "x": x}
    for key, cfg in {
        "fp32": base,
        "fp16": ftp.QuantConfig(show_progress=False, calibrator="minmax", float_dtype="float16"),
        "fp16_mixed": ftp.QuantConfig(show_progress=False, calibrator="minmax", float_dtype="float16", skip=SKIP),
    }.items():
        out[key] = ftp.convert(prepared, cfg)
    return out


def _network(qgm: torch.fx.GraphModule) -> tuple:
    from fx2trt_pipeline.engine.engine_builder import create_builder

    builder = create_builder()
    _, network, ctx = network_from_graph_module(qgm, [InputSpec("x", (BATCH, 3, SIZE, SIZE))], builder=builder)
    return builder, network, ctx


def _tensor_dtypes(network) -> dict[str, list[str]]:  # noqa: ANN001
    out: dict[str, list[str]] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            out.setdefault(layer.get_output(j).dtype.name, []).append(layer.name)
    return out


@pytest.mark.parametrize("key", ["fp16", "fp16_mixed"])
def test_network_is_float16_but_scales_and_io(mnv2: dict, key: str) -> None:
    _, network, _ = _network(mnv2[key])
    dtypes = _tensor_dtypes(network)
    assert set(dtypes) <= {"HALF", "INT8", "FLOAT", "INT64"}, dtypes.keys()
    floats = [n for n in dtypes["FLOAT"] if not n.endswith("scale")]
    assert floats == ["classifier_1_float32"], floats  # the output cast; scales stay float32
    assert network.get_input(0).dtype.name == "FLOAT" and network.get_output(0).dtype.name == "FLOAT"
    assert len(dtypes["HALF"]) > 200


@pytest.mark.parametrize("key", ["fp16", "fp16_mixed"])
def test_executor_matches_simulated_model(mnv2: dict, key: str) -> None:
    qgm, x = mnv2[key], mnv2["x"]
    _, network, _ = _network(qgm)
    executor = NetworkExecutor(network)
    outputs, _ = executor.run({"x": x})
    with torch.no_grad():
        sim = qgm(x)
    assert sim.dtype == torch.float32
    if key == "fp16":  # INT8 layers only: bit-exact (float16 rounding included)
        assert torch.equal(outputs[network.get_output(0).name], sim)
    report = tie_parity(qgm, ExecutorRegions(executor), (x,), TOLERANCE)
    assert report, str(report)
    assert report.end_to_end_cosine > 0.9999, report.summary()


def test_plan_runs_float_parts_in_half(mnv2: dict) -> None:
    from fx2trt_pipeline.engine.engine_builder import engine_and_plan_from_network

    plans = {}
    for key in ("fp32", "fp16", "fp16_mixed"):
        builder, network, _ctx = _network(mnv2[key])
        _, plans[key] = engine_and_plan_from_network(builder, network, [InputSpec("x", (BATCH, 3, SIZE, SIZE))])
    mixed = plans["fp16_mixed"]
    compute = Counter(layer.compute_dtype for layer in mixed.layers if layer.compute_kind is not None)
    assert set(compute) == {"Int8", "Half"} and compute["Half"] >= 2, compute  # the float convs
    # The float classifier (a runtime fusion) and every epilogue (kgen) carry Half: no Float constant there
    # but scales, and their float bias constants are Half (Float in the float32 build).
    for key, want in (("fp16", "Half"), ("fp32", "Float")):
        kgen = [layer for layer in plans[key].layers if layer.type == "kgen"]
        dtypes = Counter(c.dtype for layer in kgen for c in layer.constants)
        assert dtypes["Half"] >= 50 if want == "Half" else dtypes["Half"] == 0, (key, dtypes)
    classifier = [layer for layer in mixed.layers if "classifier_1" in " ".join(layer.nodes)]
    assert classifier and all(t.dtype == "Half" for layer in classifier for t in (*layer.inputs, *layer.constants))
    # Only the network output's kernel writes Float (the output cast fused into it).
    float_out = [layer for layer in plans["fp16"].layers if layer.outputs and layer.outputs[0].dtype == "Float"]
    assert all(layer.compute_kind is not None for layer in float_out[:-1]), [layer.name for layer in float_out]


def test_float16_close_to_float32_float_parts(mnv2: dict) -> None:
    x = mobilenet.photo_samples(32, size=SIZE, seed=2)
    with torch.no_grad():
        y32, y16, ref = mnv2["fp32"](x), mnv2["fp16"](x), mnv2["model"](x)
    cos = cosine_similarity(y16, y32)
    agree = float((y16.argmax(1) == y32.argmax(1)).float().mean())
    # Measured (see docs/float16.md): float16 vs float32 float parts and each against the FP32 model.
    assert cos > 0.97 and agree >= 0.75, (cos, agree)
    assert abs(cosine_similarity(y16, ref) - cosine_similarity(y32, ref)) < 0.01
    agree16 = float((y16.argmax(1) == ref.argmax(1)).float().mean())
    agree32 = float((y32.argmax(1) == ref.argmax(1)).float().mean())
    assert agree16 >= agree32 - 0.1, (agree16, agree32)


def test_tampered_weight_scale_fails_parity(mnv2: dict) -> None:
    qgm, x = mnv2["fp16"], mnv2["x"]
    tampered = copy.deepcopy(qgm)
    scale = tampered.get_buffer("features_4_conv_1_0_weight_scale")
    scale.mul_(1.5)
    _, network, _ = _network(tampered)
    report = tie_parity(qgm, ExecutorRegions(network), (x,), TOLERANCE)
    assert not report
    assert "features_4_conv_1_0" in str(report)


def test_rebuild_from_state_keeps_float16(mnv2: dict) -> None:
    qgm = mnv2["fp16"]
    state = get_quant_state(qgm)
    rebuilt = ftp.rebuild_quantized(mnv2["model"], state, (mnv2["x"][:2],))
    with torch.no_grad():
        assert torch.equal(rebuilt(mnv2["x"][:4]), qgm(mnv2["x"][:4]))


def test_config_and_boundary_cast() -> None:
    with pytest.raises(ConfigError, match="float_dtype"):
        ftp.QuantConfig(float_dtype="bfloat16")
    assert ftp.QuantConfig.from_dict({"float_dtype": "float16"}).float_dtype == "float16"
    assert float_cast(torch.ones(2, dtype=torch.int64), torch.float16).dtype == torch.int64


def test_cli_flag_sets_quant_config() -> None:
    from fx2trt_pipeline.deploy.cli import build_overrides, build_parser
    from fx2trt_pipeline.deploy.config_loader import run_config_from_sources

    args = build_parser().parse_args(["build", "--float-dtype", "float16"])
    assert run_config_from_sources(None, build_overrides(args)).quant.float_dtype == "float16"
    default = build_parser().parse_args(["build"])
    assert run_config_from_sources(None, build_overrides(default)).quant.float_dtype == "float32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--float-dtype", "bfloat16"])


def test_qdq_onnx_export_writes_float16_around_qdq(tmp_path) -> None:  # noqa: ANN001
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from fx2trt_pipeline.export.onnx_export import export_qdq_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).eval()
    x = torch.randn(4, 3, 16, 16)
    cfg = ftp.QuantConfig(float_dtype="float16", show_progress=False)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=cfg)
    path = export_qdq_onnx(qgm, (x,), tmp_path / "f16.onnx")
    graph = onnx.load(str(path)).graph
    producers = {out: n for n in graph.node for out in n.output}
    # A DequantizeLinear (float32 scale) feeds an INT8 layer's float32 Conv / Gemm directly (q * s exact), or
    # is cast to float16 for float16 layers (the pooling here); every Q reads a Cast to float.
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            (user,) = [n for n in graph.node if node.output[0] in n.input]
            half_cast = user.op_type == "Cast" and user.attribute[0].i == onnx.TensorProto.FLOAT16
            assert user.op_type in ("Conv", "Gemm") or half_cast, user.op_type
        if node.op_type == "QuantizeLinear":
            assert producers[node.input[0]].op_type == "Cast"
    conv = next(n for n in graph.node if n.op_type == "Conv")
    assert [producers[v].op_type for v in conv.input] == ["DequantizeLinear"] * 2  # no bias: added in float16
    session = ort.InferenceSession(str(path))
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        want = qgm(x)
    assert got.dtype == torch.float32 and cosine_similarity(got, want) > 0.999


def test_float16_transformer_layer_norm_builds_and_matches() -> None:
    """LayerNorm's scale and shift follow the input's dtype (TensorRT refuses a Half input with Float scale);
    a small ViT with float16 float parts builds, runs Half in the plan and the executor equals the simulated model."""
    from torchvision.models.vision_transformer import VisionTransformer

    from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network

    torch.manual_seed(0)
    model = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)
    x = torch.randn(2, 3, 64, 64)
    cfg = ftp.QuantConfig(show_progress=False, float_dtype="float16", calibrator="minmax")
    prepared = ftp.prepare(model.eval(), (x,), cfg)
    ftp.calibrate(prepared, [x])
    for config, dtypes in ((cfg, {"Int8": 10}), (dataclasses.replace(cfg, skip=("*",)), {"Half": 10})):
        qgm = ftp.convert(prepared, config)
        spec = [InputSpec(next(n.name for n in qgm.graph.nodes if n.op == "placeholder"), tuple(x.shape))]
        builder, network, _ctx = network_from_graph_module(qgm, spec, builder=create_builder())
        _, plan = engine_and_plan_from_network(builder, network, spec)
        assert plan.summary()["compute_layers_by_dtype"] == dtypes
        norms = [network.get_layer(i) for i in range(network.num_layers)]
        assert all(
            layer.get_input(1).dtype == layer.get_input(0).dtype
            for layer in norms
            if layer.type.name == "NORMALIZATION"
        )
        out = next(iter(NetworkExecutor(network).run({spec[0].name: x})[0].values()))
        with torch.no_grad():
            assert torch.equal(qgm(x).float(), out.float())
