"""Tie-aware parity: the integer-exact network executor and ONNX Runtime (no graph optimizations) agree
with the simulated model up to rounding ties; real errors in a QDQ ONNX model fail and name the layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.executor.executor_int8 import integer_layers
from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.validate.tie_parity import TieTolerance, compare_int8, tie_parity
from fx2trt_pipeline.validate.tie_regions import ExecutorRegions, OnnxRuntimeRegions

pytest.importorskip("onnxruntime")
from tests.validate import tamper  # noqa: E402  (needs onnx)

needs_trt = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")
QUICK = TieTolerance(noise_flips=0)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.fx.GraphModule, torch.Tensor, Path]:
    torch.manual_seed(0)
    qgm = ftp.quantize_model(
        torchvision.models.resnet18().eval(), [torch.randn(4, 3, 32, 32)], config=ftp.QuantConfig(show_progress=False)
    )
    x = torch.randn(2, 3, 32, 32)
    path = export_qdq_onnx(
        qgm, (x,), tmp_path_factory.mktemp("onnx") / "r18.onnx", input_names=["x"], output_names=["y"]
    )
    return qgm, x, path


def test_compare_int8_allows_one_step_flips_on_ties_only() -> None:
    ref = torch.tensor([3, 4, -2, 7], dtype=torch.int8)
    pre = torch.tensor([2.5, 4.2, -2.5001, 7.0])
    own = torch.tensor([2, 5, -3, 7], dtype=torch.int8)  # tie flip, real flip, tie flip (within 1e-3)
    result = compare_int8("q", ("conv",), own, ref, pre, 1e-3)
    assert (result.flips, result.tie_flips, result.passed) == (3, 2, False)
    assert compare_int8("q", (), torch.tensor([2, 4, -3, 7], dtype=torch.int8), ref, pre, 1e-3).passed


@needs_trt
def test_executor_is_integer_exact_on_mobilenet_v2_real_weights() -> None:
    pytest.importorskip("skimage")
    from fx2trt_pipeline.models.mobilenet_v2_imagenet import mobilenet_v2_imagenet, photo_samples

    qgm = ftp.quantize_model(
        mobilenet_v2_imagenet(), [photo_samples(4, size=64, seed=0)], config=ftp.QuantConfig(show_progress=False)
    )
    x = photo_samples(2, size=64, seed=1)
    _, network, _ctx = network_from_graph_module(qgm, [InputSpec("x", tuple(x.shape))])
    regions = ExecutorRegions(network)
    assert len(integer_layers(regions.executor)) == 53
    report = tie_parity(qgm, regions, (x,), TieTolerance(noise_flips=1))
    assert report, str(report)
    assert sum(r.flips for r in report.regions) == report.tie_flips  # only tie flips, if any
    assert report.noise_floor_cosine is not None and report.noise_floor_cosine < 1.0
    assert "vs simulated cosine" in report.summary() and "noise floor" in report.summary()


@needs_trt
def test_executor_matches_simulated_on_resnet18(resnet) -> None:
    qgm, x, _ = resnet
    _, network, _ctx = network_from_graph_module(qgm, [InputSpec("x", tuple(x.shape))])
    report = tie_parity(qgm, ExecutorRegions(network), (x,), QUICK)
    assert report and report.tie_flips == 0 and report.end_to_end_cosine > 0.99999, str(report)


def test_onnxruntime_without_optimizations_matches_simulated(resnet) -> None:
    qgm, x, path = resnet
    report = tie_parity(qgm, OnnxRuntimeRegions(path, "disabled"), (x,), QUICK)
    assert report, str(report)
    assert all(r.sqnr_db > 60 for r in report.outputs)


TAMPERS = {
    "weight_scale_x1.5": (tamper.scale_weight, "layer2_0_conv2", "layer2_0_conv2"),
    "wrong_axis": (tamper.wrong_axis, "layer1_0_conv1", "layer1_0_conv1"),
    "missing_qdq_pair": (tamper.drop_qdq_pair, 5, "layer1_1_relu_1_q"),
    "activation_scale_x2": (tamper.scale_activation, 3, "layer1_0_relu_1_q"),
}


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_tampered_onnx_fails_and_names_the_layer(resnet, tmp_path: Path, kind: str) -> None:
    qgm, x, path = resnet
    fn, where, named = TAMPERS[kind]
    bad = tamper.tampered_copy(path, tmp_path / "bad.onnx", fn, where)
    report = tie_parity(qgm, OnnxRuntimeRegions(bad, "disabled"), (x,), QUICK)
    first = report.first_failure()
    assert not report and first is not None
    assert named == first.name or named in first.layers, first.describe()
    assert named in report.summary()
