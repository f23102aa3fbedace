"""Models that arrive through ONNX: a YOLOv8-style detector and a DBNet-style text detector exported with
torch.onnx.export (dynamic batch), converted back by onnx2torch, then quantized, built, and checked end to end:
the network executor and ONNX Runtime on the QDQ ONNX both within tie-aware parity of the simulated model."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.capture.static_values import is_onnx2torch_module
from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network
from fx2trt_pipeline.executor.network_executor import NetworkExecutor
from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
from fx2trt_pipeline.models.onnx_heads import TinyDBNet, TinyYolo, onnx2torch_roundtrip, warmed_up
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.quantize.qdq_ops import is_quantize
from fx2trt_pipeline.quantize.state import get_quant_state
from fx2trt_pipeline.validate.compare import cosine_similarity
from fx2trt_pipeline.validate.tie_parity import TieTolerance, tie_parity
from fx2trt_pipeline.validate.tie_regions import ExecutorRegions, OnnxRuntimeRegions

pytest.importorskip("onnx2torch", reason="onnx2torch (the foreign extra) is not installed")
pytest.importorskip("onnxruntime")

pytestmark = [
    pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"),
]

SIZE = 64
QUICK = TieTolerance(noise_flips=0)
MODELS = {"yolo": TinyYolo, "dbnet": TinyDBNet}


def _data(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@functools.cache
def flow_of(name: str) -> dict:
    """The onnx2torch graph of one model and its quantized graph (minmax keeps the suite fast)."""
    torch.manual_seed(0)
    model = warmed_up(MODELS[name](), SIZE)
    foreign = onnx2torch_roundtrip(model, _data(1, 0))
    x = _data(2, 1)
    config = ftp.QuantConfig(calibrator="minmax", show_progress=False)
    qgm = ftp.quantize_model(foreign, [_data(2, 2), _data(2, 3)], example_inputs=(x,), config=config)
    return {"name": name, "model": model, "foreign": foreign, "qgm": qgm, "x": x}


@pytest.fixture(params=list(MODELS))
def flow(request: pytest.FixtureRequest) -> dict:
    return flow_of(request.param)


def _convs(gm: torch.fx.GraphModule) -> list[str]:
    return [
        n.target
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), (nn.Conv2d, nn.ConvTranspose2d))
    ]


def test_the_graph_is_foreign_and_every_conv_is_quantized(flow: dict) -> None:
    foreign, qgm = flow["foreign"], flow["qgm"]
    assert any(
        n.op == "call_module" and is_onnx2torch_module(foreign.get_submodule(n.target)) for n in foreign.graph.nodes
    )
    placement = get_quant_state(qgm).placement
    # onnx2torch's nn.Conv2d / ConvTranspose2d modules (BatchNorm folded by the exporter) all get int8 weights
    assert sorted(w.module for w in placement.weights.values()) == sorted(_convs(foreign))
    with torch.no_grad():
        sim, ref = qgm(flow["x"]), flow["model"](flow["x"])
    assert cosine_similarity(sim, ref) > 0.99


def test_yolo_anchor_arithmetic_stays_float_and_dfl_reads_int8() -> None:
    qgm = flow_of("yolo")["qgm"]
    points = get_quant_state(qgm).placement.points
    # only conv inputs are quantized (the image, CBS outputs, the DFL's softmax): never an anchor operand
    consumers = {use[0] for p in points.values() for use in p.uses}
    assert all(name.endswith("conv") for name in consumers), consumers
    assert "softmax" in points and any(u[0] == "dfl_conv" for u in points["softmax"].uses)
    anchors = [n for n in qgm.graph.nodes if n.op == "get_attr" and str(n.target).endswith("_constant")]
    assert len(anchors) == 2  # anchor points and strides, folded from the exported arange / full arithmetic
    assert all(not is_quantize(u) for a in anchors for u in a.users)
    assert not any(is_quantize(u) for a in anchors for user in a.users for u in user.users)


def test_dbnet_nearest_resize_shares_its_input_scale() -> None:
    qgm = flow_of("dbnet")["qgm"]
    placement = get_quant_state(qgm).placement
    nearest = {n.name for n in qgm.graph.nodes if n.target is F.interpolate and n.kwargs["mode"] == "nearest"}
    assert len(nearest) == 3 and not nearest & set(placement.points)  # no Q/DQ after a nearest resize
    assert {u[0] for u in placement.points["lateral_2_conv"].uses} & nearest  # it resizes int8 data
    group = {member: g.key for g in placement.groups.values() for member in g.members}
    # the concat of the three maps: one scale, its nearest-resized input quantized before the resize
    assert group["resize_2"] == group["smooth_1_conv"] == group["smooth_0_conv"]


def test_engine_builds_and_the_executor_has_tie_aware_parity(flow: dict) -> None:
    qgm = flow["qgm"]
    spec = ftp.InputSpec.dynamic_batch("x", (3, SIZE, SIZE), min_batch=1, opt_batch=2, max_batch=4)
    builder, network, _ctx = network_from_graph_module(qgm, [spec])
    assert len(engine_bytes_from_network(builder, network, [spec])) > 0
    executor = NetworkExecutor(network)
    for x in (flow["x"], _data(3, 4)):  # the example batch and another one (the batch is dynamic)
        report = tie_parity(qgm, ExecutorRegions(executor), (x,), QUICK)
        assert report and len(report.regions) >= 10, str(report)


def test_qdq_onnx_runs_in_onnxruntime_with_tie_aware_parity(flow: dict, tmp_path: Path) -> None:
    qgm, x = flow["qgm"], flow["x"]
    path = export_qdq_onnx(qgm, (x,), tmp_path / f"{flow['name']}.onnx", input_names=["x"], dynamic_batch=True)
    report = tie_parity(qgm, OnnxRuntimeRegions(path, "disabled"), (x,), QUICK)
    assert report, str(report)
