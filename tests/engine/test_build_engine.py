"""build_engine end to end: a hand-made reference-quantized GraphModule -> engine + sidecar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from fx2trt_pipeline.engine.artifact import hash_quant_state, load_engine_bytes
from fx2trt_pipeline.engine.engine_builder import build_engine
from fx2trt_pipeline.engine.options import BuildOptions
from fx2trt_pipeline.errors import EngineBuildError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.quantize import qdq_ops


def make_qdq_conv_relu() -> torch.fx.GraphModule:
    """The quantizer's form of Conv2d+ReLU, written node by node (see docs/architecture.md):
    activation Q/DQ pair, int8 weight dequantized per channel, functional conv keeping the layer name."""
    g = torch.Generator().manual_seed(0)
    root = torch.nn.Module()
    root.register_buffer("x_input_scale", torch.tensor(0.05))
    root.register_buffer("conv_weight_int8", torch.randint(-127, 128, (8, 3, 3, 3), generator=g, dtype=torch.int8))
    root.register_buffer("conv_weight_scale", torch.rand(8, generator=g) * 0.02 + 0.001)
    root.register_buffer("conv_bias", torch.randn(8, generator=g))
    graph = torch.fx.Graph()

    def call(target: Any, args: tuple[Any, ...], name: str) -> torch.fx.Node:
        return graph.create_node("call_function", target, args, name=name)

    x = graph.placeholder("x")
    x_scale = graph.get_attr("x_input_scale")
    x_dq = call(qdq_ops.DEQUANTIZE, (call(qdq_ops.QUANTIZE, (x, x_scale, None), "x_q"), x_scale, None), "x_dq")
    w = call(
        qdq_ops.DEQUANTIZE,
        (graph.get_attr("conv_weight_int8"), graph.get_attr("conv_weight_scale"), 0),
        "conv_weight_dq",
    )
    conv = call(F.conv2d, (x_dq, w, graph.get_attr("conv_bias"), (1, 1), (1, 1), (1, 1), 1), "conv")
    graph.output(call(F.relu, (conv,), "relu"))
    return torch.fx.GraphModule(root, graph)


@pytest.fixture
def qgm() -> torch.fx.GraphModule:
    gm = make_qdq_conv_relu()
    x = torch.randn(2, 3, 16, 16)
    assert gm(x).shape == (2, 8, 16, 16)  # the graph runs eagerly too
    return gm


def test_build_engine_static(tmp_path: Path, qgm: torch.fx.GraphModule) -> None:
    spec = InputSpec("images", (2, 3, 16, 16))
    opts = BuildOptions(builder_optimization_level=1, timing_cache_path=tmp_path / "timing.cache")
    art = build_engine(qgm, [spec], tmp_path / "qconv.plan", options=opts, output_names=["features"])
    data, meta = load_engine_bytes(art.engine_path)
    assert len(data) == art.size_bytes
    assert meta["inputs"] == [spec.to_dict()]
    assert meta["outputs"] == [{"name": "features", "dtype": "float32", "shape": [2, 8, 16, 16]}]
    assert meta["num_layers"] >= 5  # Q, DQ, weight DQ, conv, relu (+ constants)
    assert meta["quant_state_hash"] == hash_quant_state(qgm.state_dict())
    assert meta["quant_state_hash_source"] == "state_dict"
    assert meta["build_options"]["builder_optimization_level"] == 1
    assert meta["build"]["build_seconds"] > 0 and meta["build"]["engine_bytes"] == len(data)
    assert (tmp_path / "timing.cache").is_file()


def test_build_engine_dynamic_batch_and_caller_hash(tmp_path: Path, qgm: torch.fx.GraphModule) -> None:
    spec = InputSpec.dynamic_batch("images", (3, 16, 16), min_batch=1, opt_batch=4, max_batch=16)
    art = build_engine(qgm, [spec], tmp_path / "dyn.plan", quant_state_hash="sha256:abc")
    meta = json.loads(art.metadata_path.read_text())
    assert [InputSpec.from_dict(d) for d in meta["inputs"]] == [spec]
    assert meta["outputs"][0]["shape"] == [-1, 8, 16, 16]
    assert meta["quant_state_hash"] == "sha256:abc" and meta["quant_state_hash_source"] == "caller"


def test_build_engine_failure_leaves_no_file(
    tmp_path: Path, qgm: torch.fx.GraphModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fx2trt_pipeline.engine import engine_builder

    def refuse(*args: Any, **kwargs: Any) -> tuple[bytes, Any]:
        raise EngineBuildError("TensorRT could not build the network")

    monkeypatch.setattr(engine_builder, "engine_and_plan_from_network", refuse)
    with pytest.raises(EngineBuildError):
        build_engine(qgm, [InputSpec("images", (1, 3, 16, 16))], tmp_path / "x.plan")
    assert list(tmp_path.iterdir()) == []


def test_build_engine_records_the_quantizers_state_digest(tmp_path: Path) -> None:
    import fx2trt_pipeline as ftp
    from fx2trt_pipeline.quantize.state import get_quant_state

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1),
    ).eval()
    batches = [torch.randn(2, 3, 16, 16) for _ in range(2)]
    qgm = ftp.quantize_model(
        model,
        batches,
        example_inputs=(batches[0],),
        config=ftp.QuantConfig(calibrator="minmax", show_progress=False),
    )
    art = build_engine(qgm, [InputSpec("x", (2, 3, 16, 16))], tmp_path / "seq.plan")
    assert art.metadata["quant_state_hash"] == "sha256:" + get_quant_state(qgm).digest()
    assert art.metadata["quant_state_hash_source"] == "QuantState.digest"
    assert art.output_names == ["output0"] and art.metadata["outputs"][0]["shape"] == [2, 4, 16, 16]
