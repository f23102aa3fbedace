"""Real models end to end: quantize -> convert -> network executor vs the simulated GraphModule.

The executor reads only the converted INetworkDefinition, so agreement on every output (and every
named intermediate layer) is an independent check of the converters on whole networks. A TensorRT
engine runs the same comparison where a supported GPU exists.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.validate.compare import Tolerance
from fx2trt_pipeline.validate.layer_report import layer_parity
from fx2trt_pipeline.validate.runners import (
    NetworkExecutorRunner,
    OnnxRuntimeRunner,
    TensorRTEngineRunner,
    TorchRunner,
    compare_runners,
)

PARITY = Tolerance(min_cosine=0.9999)


def _centernet_resnet18() -> torch.nn.Module:
    from fx2trt_pipeline.models.centernet import centernet_resnet18

    return centernet_resnet18(num_classes=4, head_channels=16)


MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(), (3, 32, 32), ["logits"]),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(), (3, 32, 32), ["logits"]),
    "centernet_resnet18": (_centernet_resnet18, (3, 64, 64), ["hm", "wh", "reg"]),
}


def _quantized(name: str):
    factory, sample, outputs = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    batches = [torch.randn(2, *sample) for _ in range(2)]
    config = ftp.QuantConfig(calibrator="minmax", show_progress=False)
    qgm = ftp.quantize_model(model, batches, example_inputs=(batches[0],), config=config)
    spec = InputSpec.dynamic_batch("images", sample, min_batch=1, opt_batch=2, max_batch=4)
    return qgm, spec, outputs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_executor_matches_simulated_on_real_models(trt, name):
    qgm, spec, outputs = _quantized(name)
    _, network, _ctx = network_from_graph_module(qgm, [spec], output_names=outputs)
    executor = NetworkExecutorRunner(network)
    simulated = TorchRunner(qgm, ["images"], outputs, name="simulated")
    for batch in (1, 3):  # dynamic batch: shapes come from the feeds
        result = compare_runners(simulated, executor, {"images": torch.randn(batch, *spec.shape[1:])}, PARITY)
        assert result, str(result)
    report = layer_parity(qgm, network, (torch.randn(2, *spec.shape[1:]),))
    assert report, str(report)
    assert len(report.layers.outputs) > 50  # intermediate layers are really compared


@pytest.mark.slow
def test_centernet_qdq_onnx_matches_simulated_and_parses(tmp_path, trt):
    qgm, spec, outputs = _quantized("centernet_resnet18")
    path = export_qdq_onnx(
        qgm,
        (torch.randn(1, *spec.shape[1:]),),
        tmp_path / "centernet.onnx",
        input_names=["images"],
        output_names=outputs,
        dynamic_batch=True,
    )
    feeds = {"images": torch.randn(2, *spec.shape[1:])}
    simulated = TorchRunner(qgm, ["images"], outputs, name="simulated")
    # ONNX Runtime's kernels sum in another order; a 1e-7 difference flips an int8 rounding now and
    # then, and over ~20 quantized layers with random weights that costs ~30 dB: not cosine 0.9999.
    result = compare_runners(simulated, OnnxRuntimeRunner(path), feeds, Tolerance(min_cosine=0.999))
    assert result, str(result)
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path))
    assert compare_runners(simulated, NetworkExecutorRunner(network, name="parsed"), feeds, PARITY)


@pytest.mark.gpu
def test_engine_matches_simulated(tmp_path, trt):
    from fx2trt_pipeline.engine.engine_builder import build_engine
    from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

    reason = gpu_unavailable_reason()
    if reason:
        pytest.skip(reason)
    qgm, spec, outputs = _quantized("resnet18")
    build_engine(qgm, [spec], tmp_path / "resnet18.plan", output_names=outputs)
    engine = TensorRTEngineRunner(tmp_path / "resnet18.plan")
    feeds = {"images": torch.randn(2, *spec.shape[1:], device="cuda")}
    result = compare_runners(
        TorchRunner(qgm.cuda(), ["images"], outputs, name="simulated"), engine, feeds, Tolerance(min_cosine=0.999)
    )
    assert result, str(result)
