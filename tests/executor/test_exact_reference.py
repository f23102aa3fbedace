"""TensorRTArithmetic on hand-made PT2E-style graphs: exact int8 sums, TensorRT's float32 epilogue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fx2trt_pipeline.executor.exact_reference import TensorRTArithmetic

decomposed = pytest.importorskip("torch.ao.quantization.fx._decomposed")
qd = torch.ops.quantized_decomposed


def _quantized_conv(per_channel: bool) -> torch.fx.GraphModule:
    """quantize -> dequantize -> aten.conv2d with an int8 weight dequantized per channel or per tensor, as
    convert_pt2e writes it (weights as get_attr nodes)."""
    gen = torch.Generator().manual_seed(0)
    root = torch.nn.Module()
    root.register_buffer("w_q", torch.randint(-127, 128, (6, 4, 3, 3), generator=gen, dtype=torch.int8))
    root.register_buffer("w_s", torch.rand(6, generator=gen) * 0.01 + 1e-3 if per_channel else torch.tensor(0.004))
    root.register_buffer("zeros", torch.zeros(6, dtype=torch.int64))
    root.register_buffer("bias", torch.randn(6, generator=gen))
    g = torch.fx.Graph()
    x = g.placeholder("x")
    q = g.call_function(qd.quantize_per_tensor.default, (x, 0.05, 0, -128, 127, torch.int8))
    xd = g.call_function(qd.dequantize_per_tensor.default, (q, 0.05, 0, -128, 127, torch.int8))
    w_q, w_s, zeros, bias = (g.get_attr(name) for name in ("w_q", "w_s", "zeros", "bias"))
    if per_channel:
        wd = g.call_function(qd.dequantize_per_channel.default, (w_q, w_s, zeros, 0, -127, 127, torch.int8))
    else:
        wd = g.call_function(qd.dequantize_per_tensor.default, (w_q, float(root.w_s), 0, -127, 127, torch.int8))
    g.output(g.call_function(torch.ops.aten.conv2d.default, (xd, wd, bias, [1, 1], [1, 1]), name="conv"))
    return torch.fx.GraphModule(root, g)


@pytest.mark.parametrize("per_channel", [True, False])
def test_conv_is_an_exact_int8_sum_with_the_float32_epilogue(per_channel: bool) -> None:
    gm = _quantized_conv(per_channel)
    x = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(1)) * 2
    reference = TensorRTArithmetic(gm)
    got = reference.run(x)
    assert reference.integer_nodes == ["conv"]
    q = torch.clamp(torch.round(x / 0.05), -128, 127)
    acc = F.conv2d(q.double(), gm.w_q.double(), None, 1, 1)
    scale = (torch.tensor(0.05) * gm.w_s).reshape(1, -1, 1, 1) if per_channel else torch.tensor(0.05) * gm.w_s
    want = acc.float() * scale + gm.bias.reshape(1, -1, 1, 1)
    assert torch.equal(got, want)
