"""Small strongly typed networks built directly with the TensorRT API, for the build-stage tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fx2trt_pipeline import trt_api

if not trt_api.is_available():
    from tests.gpu_policy import REQUIRE_GPU, gpu_required

    why = "no TensorRT library installed (pip install 'fx2trt-pipeline[rtx]')"
    if gpu_required():  # the GPU tests below would vanish with the skip
        raise pytest.UsageError(f"{REQUIRE_GPU}=1 but the engine tests cannot run: {why}")
    pytest.skip(why, allow_module_level=True)

from fx2trt_pipeline.engine.engine_builder import create_builder  # noqa: E402
from fx2trt_pipeline.network.inputs import InputSpec  # noqa: E402
from tests.engine.fakes import fake_cuda, fake_gpu  # noqa: E402,F401  (fixtures: torch.cuda and a GPU faked)

X_SCALE = 0.05
CIN, COUT, HW = 3, 8, 12


def qdq_conv_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 weights (COUT, CIN, 3, 3), per-channel scales and a bias, reproducibly."""
    rng = np.random.default_rng(seed)
    w_int8 = rng.integers(-127, 128, size=(COUT, CIN, 3, 3)).astype(np.int8)
    w_scale = rng.uniform(0.001, 0.02, size=COUT).astype(np.float32)
    bias = rng.normal(size=COUT).astype(np.float32)
    return w_int8, w_scale, bias


def make_qdq_conv_network(builder: Any, batch: int | None = 1, seed: int = 0) -> tuple[Any, list[Any]]:
    """x -> Q/DQ (per-tensor) -> conv3x3 with int8 weights DQ'd per channel -> relu -> "y".

    ``batch=None`` makes the batch dimension dynamic. Returns the network and the numpy arrays that
    must stay alive until the build has copied them.
    """
    trt = trt_api.get_trt()
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = net.add_input("x", trt.float32, (-1 if batch is None else batch, CIN, HW, HW))
    keep = [np.array(X_SCALE, dtype=np.float32), *qdq_conv_weights(seed)]
    x_scale, w_int8, w_scale, bias = keep
    s = net.add_constant((), x_scale)
    s.name = "x_scale"
    q = net.add_quantize(x, s.get_output(0), trt.int8)
    q.name = "x_q"
    dq = net.add_dequantize(q.get_output(0), s.get_output(0), trt.float32)
    dq.name = "x_dq"
    w = net.add_constant(w_int8.shape, w_int8)
    w.name = "conv_weight_int8"
    ws = net.add_constant(w_scale.shape, w_scale)
    ws.name = "conv_weight_scale"
    wdq = net.add_dequantize(w.get_output(0), ws.get_output(0), trt.float32)
    wdq.axis = 0
    wdq.name = "conv_weight_dq"
    conv = net.add_convolution_nd(dq.get_output(0), COUT, (3, 3), trt.Weights(), trt.Weights(bias))
    conv.set_input(1, wdq.get_output(0))
    conv.padding_nd = (1, 1)
    conv.name = "conv"
    relu = net.add_activation(conv.get_output(0), trt.ActivationType.RELU)
    relu.name = "relu"
    relu.get_output(0).name = "y"
    net.mark_output(relu.get_output(0))
    return net, keep


def reference_output(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """What the Q/DQ conv network computes, in torch (TensorRT rounding: half to even, saturate)."""
    # float64 on CPU: an independent reference, free of TF32 convolutions on the GPU.
    w_int8, w_scale, bias = (torch.from_numpy(a).double() for a in qdq_conv_weights(seed))
    x64 = x.detach().cpu().double()
    xq = torch.clamp(torch.round(x64 / torch.tensor(X_SCALE, dtype=torch.float32).double()), -128, 127) * X_SCALE
    w = w_int8 * w_scale.view(-1, 1, 1, 1)
    return torch.relu(torch.nn.functional.conv2d(xq, w, bias, padding=1)).float()


@pytest.fixture
def static_spec() -> InputSpec:
    return InputSpec("x", (1, CIN, HW, HW))


@pytest.fixture
def dynamic_spec() -> InputSpec:
    return InputSpec.dynamic_batch("x", (CIN, HW, HW), min_batch=1, opt_batch=4, max_batch=8)


@pytest.fixture
def qdq_network() -> Callable[..., tuple[Any, Any, list[Any]]]:
    """Factory: ``qdq_network(batch=1 | None)`` -> (builder, network, keep-alive arrays)."""

    def make(batch: int | None = 1, seed: int = 0) -> tuple[Any, Any, list[Any]]:
        builder = create_builder()
        net, keep = make_qdq_conv_network(builder, batch, seed)
        return builder, net, keep

    return make


@pytest.fixture
def built_engine(tmp_path: Path, qdq_network: Callable[..., Any], static_spec: InputSpec) -> Path:
    """A real static-shape INT8 engine + sidecar written with save_engine; returns the engine path."""
    from fx2trt_pipeline.engine.engine_builder import (
        engine_bytes_from_network,
        network_io_metadata,
        save_engine,
    )

    builder, net, _keep = qdq_network(1)
    data = engine_bytes_from_network(builder, net, [static_spec])
    return save_engine(data, tmp_path / "conv.plan", network_io_metadata(net, [static_spec])).engine_path


@pytest.fixture
def qdq_reference() -> Callable[..., torch.Tensor]:
    """``qdq_reference(x, seed=0)``: the torch reference of the Q/DQ conv network."""
    return reference_output
