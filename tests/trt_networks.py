"""Fixtures shared by the executor, export and validate tests: small TensorRT networks and quantized graphs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.executor.network_executor import NetworkExecutor


class NetFactory:
    """A strongly typed network plus helpers to add inputs/constants and execute it."""

    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        self.network = self.builder.create_network(flag)
        self._keep: list[np.ndarray] = []  # TensorRT borrows weight memory until the build

    def input(self, name: str, shape: Sequence[int], dtype: Any | None = None) -> Any:
        return self.network.add_input(name, dtype or self.trt.float32, tuple(shape))

    def const(self, value: Any, shape: Sequence[int] | None = None) -> Any:
        # np.array (not ascontiguousarray, which turns 0-d into 1-d) keeps scalar constants 0-d.
        array = np.array(value.numpy() if isinstance(value, torch.Tensor) else value, order="C")
        self._keep.append(array)
        layer = self.network.add_constant(tuple(shape if shape is not None else array.shape), array)
        return layer.get_output(0)

    def weights(self, value: torch.Tensor) -> np.ndarray:
        array = np.ascontiguousarray(value.detach().numpy())
        self._keep.append(array)
        return array

    def run(self, feeds: dict[str, torch.Tensor], *outputs: Any) -> list[torch.Tensor]:
        for t in outputs:
            self.network.mark_output(t)
        result, _ = NetworkExecutor(self.network).run(feeds)
        return [result[t.name] for t in outputs]

    def run1(self, feeds: dict[str, torch.Tensor], output: Any) -> torch.Tensor:
        return self.run(feeds, output)[0]


@pytest.fixture(scope="session")
def trt() -> Any:
    if not trt_api.is_available():
        pytest.skip("neither TensorRT nor TensorRT-RTX is installed")
    return trt_api.get_trt()


@pytest.fixture
def net(trt: Any) -> NetFactory:
    return NetFactory(trt)


@pytest.fixture
def make_net(trt: Any) -> Any:
    """A factory of further networks within one test."""
    return lambda: NetFactory(trt)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Exact dtype and shape, values within ``atol``."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert tuple(actual.shape) == tuple(expected.shape), (tuple(actual.shape), tuple(expected.shape))
    if actual.is_floating_point():
        torch.testing.assert_close(actual, expected, atol=atol, rtol=1e-5)
    else:
        assert torch.equal(actual, expected)


@pytest.fixture
def close() -> Any:
    return assert_close


class TinyNet(torch.nn.Module):
    """conv-bn-relu, a residual add, max/avg pooling, a ConvTranspose2d and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.up = torch.nn.ConvTranspose2d(8, 4, 4, 2, 1)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.pool(y + self.conv2(y))
        up = torch.relu(self.up(y))
        return self.head(up.mean((2, 3))), up


@pytest.fixture(scope="session")
def tiny_quantized() -> tuple[torch.nn.Module, torch.fx.GraphModule]:
    """``(float model, reference-quantized GraphModule)`` of :class:`TinyNet` (minmax calibration)."""
    import fx2trt_pipeline as ftp

    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding matters
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    batches = [torch.randn(2, 3, 16, 16) for _ in range(3)]
    config = ftp.QuantConfig(calibrator="minmax", show_progress=False)
    return model, ftp.quantize_model(model, batches, example_inputs=(batches[0],), config=config)


def make_qdq_conv_gm(seed: int = 0) -> torch.fx.GraphModule:
    """A hand-written QDQ GraphModule: x -> Q/DQ -> conv (int8 weight, per-channel DQ) -> relu."""
    from fx2trt_pipeline.quantize import qdq_ops

    gen = torch.Generator().manual_seed(seed)
    root = torch.nn.Module()
    root.register_buffer("x_scale", torch.tensor(0.03))
    weight = torch.randn(6, 3, 3, 3, generator=gen)
    scale = weight.abs().amax((1, 2, 3)) / 127
    root.register_buffer("conv_weight_int8", qdq_ops.quantize(weight, scale, 0))
    root.register_buffer("conv_weight_scale", scale)
    root.register_buffer("conv_bias", torch.randn(6, generator=gen))
    g = torch.fx.Graph()
    x = g.placeholder("x")
    s = g.get_attr("x_scale")
    q = g.call_function(qdq_ops.QUANTIZE, (x, s, None))
    dq = g.call_function(qdq_ops.DEQUANTIZE, (q, s, None))
    w = g.call_function(qdq_ops.DEQUANTIZE, (g.get_attr("conv_weight_int8"), g.get_attr("conv_weight_scale"), 0))
    conv = g.call_function(torch.nn.functional.conv2d, (dq, w, g.get_attr("conv_bias"), (1, 1), (1, 1), (1, 1), 1))
    g.output(g.call_function(torch.relu, (conv,)))
    return torch.fx.GraphModule(root, g)


@pytest.fixture
def qdq_conv_gm() -> torch.fx.GraphModule:
    return make_qdq_conv_gm()
