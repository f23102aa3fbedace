"""NetworkExecutor behaviour: execution order, capture, feeds, errors, dtypes, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fx2trt_pipeline.errors import ConfigError, ConversionError
from fx2trt_pipeline.executor.network_executor import NetworkExecutor
from fx2trt_pipeline.quantize import qdq_ops


def _qdq_conv_network(net, batch=-1):
    """input -> Q/DQ -> conv (int8 kernel via DQ, set_input(1)) -> relu; returns tensors and weights."""
    trt = net.trt
    x = net.input("images", (batch, 3, 8, 8))
    act_scale = torch.tensor(0.02)
    w = torch.randn(4, 3, 3, 3)
    w_scale = w.abs().amax((1, 2, 3)) / 127
    w_q = qdq_ops.quantize(w, w_scale, 0)
    q = net.network.add_quantize(x, net.const(act_scale), trt.int8)
    q.name = "images_q"
    dq = net.network.add_dequantize(q.get_output(0), net.const(act_scale), trt.float32)
    dq.name = "images_dq"
    conv = net.network.add_convolution_nd(dq.get_output(0), 4, (3, 3), trt.Weights(), trt.Weights())
    conv.name, conv.padding_nd = "conv", (1, 1)
    w_dq = net.network.add_dequantize(net.const(w_q), net.const(w_scale), trt.float32)
    w_dq.axis, w_dq.name = 0, "conv.weight_dq"
    conv.set_input(1, w_dq.get_output(0))
    relu = net.network.add_activation(conv.get_output(0), trt.ActivationType.RELU)
    relu.name = "relu"
    relu.get_output(0).name = "scores"
    net.network.mark_output(relu.get_output(0))

    def reference(images):
        xq = qdq_ops.fake_quantize(images, act_scale)
        return torch.relu(F.conv2d(xq, qdq_ops.dequantize(w_q, w_scale, 0), None, 1, 1))

    return reference


def test_qdq_conv_network_dynamic_batch_and_capture(net, close):
    reference = _qdq_conv_network(net)
    executor = NetworkExecutor(net.network)
    assert executor.input_names == ["images"] and executor.output_names == ["scores"]
    for batch in (1, 5):
        x = torch.randn(batch, 3, 8, 8)
        outputs, captured = executor.run({"images": x}, capture=["images_q", "conv", "scores"])
        close(outputs["scores"], reference(x))
        assert captured["images_q"].dtype == torch.int8
        close(captured["images_q"], qdq_ops.quantize(x, torch.tensor(0.02)))
        assert captured["scores"] is outputs["scores"]
        assert torch.equal(torch.relu(captured["conv"]), outputs["scores"])


def test_capture_all_names_every_layer(net):
    _qdq_conv_network(net)
    executor = NetworkExecutor(net.network)
    _, captured = executor.run({"images": torch.randn(2, 3, 8, 8)}, capture="all")
    assert set(captured) == {name for name, _ in executor.layers}
    assert executor.num_layers == len(captured) == 9
    assert ("conv", "CONVOLUTION") in executor.layers
    assert executor.layer_outputs("relu") == ["scores"]


def test_multi_output_layer_capture_keys(net, trt):
    x = torch.randn(2, 6)
    topk = net.network.add_topk(net.input("x", x.shape), trt.TopKOperation.MAX, 2, 1 << 1)
    topk.name = "top"
    net.network.mark_output(topk.get_output(0))
    _, captured = NetworkExecutor(net.network).run({"x": x}, capture=["top"])
    assert set(captured) == {"top", "top:1"}
    assert captured["top:1"].dtype == torch.int32


def test_feed_errors_are_clear(net):
    _qdq_conv_network(net, batch=2)
    executor = NetworkExecutor(net.network)
    with pytest.raises(ConfigError, match="missing \\['images'\\]"):
        executor.run({})
    with pytest.raises(ConfigError, match="unexpected \\['other'\\]"):
        executor.run({"images": torch.randn(2, 3, 8, 8), "other": torch.zeros(1)})
    with pytest.raises(ConfigError, match="shape \\(3, 3, 8, 8\\)"):
        executor.run({"images": torch.randn(3, 3, 8, 8)})
    with pytest.raises(ConfigError, match="torch.int64"):
        executor.run({"images": torch.zeros(2, 3, 8, 8, dtype=torch.int64)})
    with pytest.raises(ConfigError, match="nope"):
        executor.run({"images": torch.randn(2, 3, 8, 8)}, capture=["nope"])
    # float64 feeds are converted to the float32 input, as an engine's input binding would.
    outputs, _ = executor.run({"images": torch.randn(2, 3, 8, 8, dtype=torch.float64)})
    assert outputs["scores"].dtype == torch.float32


def test_unsupported_layers_are_all_named(net, trt):
    x = net.input("x", (1, 4, 5, 5))
    lrn = net.network.add_lrn(x, 3, 1e-4, 0.75, 1.0)
    lrn.name = "norm1"
    nz = net.network.add_non_zero(lrn.get_output(0))
    nz.name = "nonzero"
    net.network.mark_output(nz.get_output(0))
    with pytest.raises(ConversionError) as info:
        NetworkExecutor(net.network)
    message = str(info.value)
    assert "'norm1' (LayerType.LRN)" in message and "'nonzero' (LayerType.NON_ZERO)" in message
    assert "CONVOLUTION" in message  # lists what is implemented


def test_failing_layer_is_named(net, trt):
    a = net.input("a", (-1, 3))
    b = net.input("b", (-1, 3))
    add = net.network.add_elementwise(a, b, trt.ElementWiseOperation.SUM)
    add.name = "residual_add"
    net.network.mark_output(add.get_output(0))
    with pytest.raises(ConversionError, match="'residual_add' \\(LayerType.ELEMENTWISE\\).*\\(2, 3\\), \\(4, 3\\)"):
        NetworkExecutor(net.network).run({"a": torch.zeros(2, 3), "b": torch.zeros(4, 3)})


def test_half_precision_network(net, trt, close):
    x = torch.randn(2, 4, dtype=torch.float16)
    w = torch.randn(4, 3).half()
    mm = net.network.add_matrix_multiply(
        net.input("x", x.shape, trt.float16), trt.MatrixOperation.NONE, net.const(w), trt.MatrixOperation.NONE
    )
    cast = net.network.add_cast(mm.get_output(0), trt.float32)
    out = net.run1({"x": x}, cast.get_output(0))
    close(out, (x @ w).float(), atol=1e-2)


def test_constant_weights_are_cached_across_runs(net):
    _qdq_conv_network(net)
    executor = NetworkExecutor(net.network)
    x = torch.randn(1, 3, 8, 8)
    first, _ = executor.run({"images": x})
    second, _ = executor.run({"images": x})
    assert torch.equal(first["scores"], second["scores"])
    assert len(executor._constants) == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for torch")
def test_runs_on_cuda_feeds(net, close):
    reference = _qdq_conv_network(net)
    x = torch.randn(2, 3, 8, 8)
    outputs, _ = NetworkExecutor(net.network).run({"images": x.cuda()})
    assert outputs["scores"].device.type == "cuda"
    close(outputs["scores"].cpu(), reference(x), atol=1e-4)


def test_constant_dtype_from_numpy_weights(net, close):
    out = net.const(np.array([1.5, -2.0], dtype=np.float32))
    close(net.run1({}, out), torch.tensor([1.5, -2.0]))
