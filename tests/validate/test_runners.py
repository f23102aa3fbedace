"""Runners share one interface; the engine runner delegates to build.runtime.Engine."""

from __future__ import annotations

import pytest
import torch

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.compare import Tolerance
from fx2trt_pipeline.validate.runners import (
    NetworkExecutorRunner,
    Runner,
    TensorRTEngineRunner,
    TorchRunner,
    compare_runners,
)


class _TwoHeads(torch.nn.Module):
    def forward(self, a, b):
        return {"sum": a + b, "parts": (a * 2, b - 1)}


def test_torch_runner_names_outputs():
    a, b = torch.ones(2), torch.zeros(2)
    named = TorchRunner(_TwoHeads(), ["a", "b"], ["s", "double", "minus"]).run({"a": a, "b": b})
    assert list(named) == ["s", "double", "minus"] and torch.equal(named["minus"], -torch.ones(2))
    default = TorchRunner(_TwoHeads(), ["a", "b"]).run({"a": a, "b": b})
    assert list(default) == ["output_0", "output_1", "output_2"]
    single = TorchRunner(torch.nn.Identity(), ["x"]).run({"x": a})
    assert list(single) == ["output_0"]
    with pytest.raises(ConfigError, match="lack inputs \\['b'\\]"):
        TorchRunner(_TwoHeads(), ["a", "b"]).run({"a": a})
    with pytest.raises(ConfigError, match="returned 3 tensors but 1 output names"):
        TorchRunner(_TwoHeads(), ["a", "b"], ["only"]).run({"a": a, "b": b})


def test_simulated_vs_network_executor_runner(net, qdq_conv_gm):
    trt = net.trt
    x = net.input("x", (-1, 3, 8, 8))
    gm = qdq_conv_gm
    q = net.network.add_quantize(x, net.const(gm.x_scale), trt.int8)
    dq = net.network.add_dequantize(q.get_output(0), net.const(gm.x_scale), trt.float32)
    w = net.network.add_dequantize(net.const(gm.conv_weight_int8), net.const(gm.conv_weight_scale), trt.float32)
    w.axis = 0
    conv = net.network.add_convolution_nd(dq.get_output(0), 6, (3, 3), trt.Weights(), net.weights(gm.conv_bias))
    conv.padding_nd = (1, 1)
    conv.set_input(1, w.get_output(0))
    relu = net.network.add_activation(conv.get_output(0), trt.ActivationType.RELU)
    relu.get_output(0).name = "y"
    net.network.mark_output(relu.get_output(0))
    executor = NetworkExecutorRunner(net.network)
    assert isinstance(executor, Runner) and executor.input_names == ["x"] and executor.output_names == ["y"]
    simulated = TorchRunner(gm, executor.input_names, executor.output_names, name="simulated")
    result = compare_runners(simulated, executor, {"x": torch.randn(3, 3, 8, 8)}, Tolerance(min_cosine=0.9999))
    assert result, str(result)
    assert result["y"].max_abs_error < 1e-5


class _FakeEngine:
    """Stands in for engine.runtime.Engine: records what the runner passes (runs on the CPU)."""

    input_names = ("images",)
    output_names = ("logits",)
    device = torch.device("cpu")
    warmed = 0

    def warm_up(self, batch_sizes=()):
        self.warmed += 1
        return 0.25

    def __call__(self, **feeds):
        self.seen = feeds
        return {"logits": feeds["images"].sum((1, 2, 3))}


def test_engine_runner_delegates_to_engine_object():
    engine = _FakeEngine()
    runner = TensorRTEngineRunner(engine)
    assert runner.device == engine.device  # the engine's own device, not a guessed "cuda"
    assert engine.warmed == 1 and runner.warm_up_seconds == 0.25  # warmed up before anything is timed
    x = torch.randn(2, 3, 4, 4).transpose(2, 3)  # non-contiguous: the Engine itself copies it aligned
    out = runner.run({"images": x})
    assert engine.seen["images"] is x
    assert torch.allclose(out["logits"], x.sum((1, 2, 3)))
    assert runner.input_names == ["images"] and runner.output_names == ["logits"]


def test_engine_runner_refuses_a_cpu_device():
    with pytest.raises(ConfigError, match="TensorRT engines run on CUDA devices only, got device='cpu'"):
        TensorRTEngineRunner(_FakeEngine(), device="cpu")


def test_engine_runner_loads_a_path_through_engine_load(tmp_path, monkeypatch):
    from fx2trt_pipeline.engine import runtime

    calls = []
    monkeypatch.setattr(
        runtime.Engine,
        "load",
        classmethod(lambda cls, path, device=None: calls.append((str(path), device)) or _FakeEngine()),
    )
    runner = TensorRTEngineRunner(tmp_path / "model.plan", device="cuda:1", warm_up=False)
    assert calls == [(str(tmp_path / "model.plan"), "cuda:1")]
    assert runner.warm_up_seconds is None
    assert isinstance(runner.engine, _FakeEngine)
