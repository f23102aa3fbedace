"""aten ops of torch.export graphs and PT2E's quantized_decomposed Q/DQ, through the shared harness
(built with the real builder, executor vs eager on the exported module)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.network.network import find_unsupported
from tests.converters.harness import OpCase, run_case
from tests.converters.qdq_graph import Fn

pytestmark = [
    pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"),
]

qd = torch.ops.quantized_decomposed
aten = torch.ops.aten
X = (2, 4, 8, 8)


def exported(*shapes: tuple[int, ...]):
    """A trace function: ``torch.export.export(module, examples).module()`` (aten graph + guard module)."""
    examples = tuple(torch.randn(s) for s in shapes)
    return lambda module: torch.export.export(module, examples).module()


def _activations(m, x):
    a = F.hardswish(x) + F.hardsigmoid(x) + torch.sigmoid(x) + F.silu(x) + F.relu6(x)
    b = x.clone()
    b.sigmoid_()
    c = x.clone()
    F.silu(c, inplace=True)
    d = x.clone()
    F.hardswish(d, inplace=True)
    e = x.clone()
    F.hardsigmoid(e, inplace=True)
    return a + b + c + d + e


def _elementwise(m, x, y):
    a = x + y
    a.add_(y)
    b = x - y
    b.sub_(x)
    c = x * y
    c.mul_(y)
    return a + b + c


def _shapes(m, x):
    y = torch.cat([x.view(2, -1), torch.flatten(x, 1).contiguous(), x.reshape(2, 256).clone()], 1)
    return F.dropout(y, 0.5, training=False).mean(dim=1, keepdim=True)


def _products(m, a, b):
    return torch.matmul(a, b) + torch.bmm(a, b) + torch.mm(m.p, m.q)


def _pt2e_qdq(m, x):
    q = qd.quantize_per_tensor.default(x, 0.02, 0, -128, 127, torch.int8)
    y = qd.dequantize_per_tensor.default(q, 0.02, 0, -128, 127, torch.int8)
    q2 = qd.quantize_per_tensor.tensor(x, m.s, m.z, -128, 127, torch.int8)
    y2 = qd.dequantize_per_tensor.tensor(q2, m.s, m.z, -128, 127, torch.int8)
    # a weight as convert_pt2e(fold_quantize=False) leaves it: quantize -> dequantize of the float weight
    wq = qd.quantize_per_channel.default(m.w, m.ws, m.wz, 0, -127, 127, torch.int8)
    w = qd.dequantize_per_channel.default(wq, m.ws, m.wz, 0, -127, 127, torch.int8)
    return aten.conv2d.default(y, w) + aten.conv2d.default(y2, w)


def _pt2e_module() -> nn.Module:
    w = torch.randn(6, 4, 3, 3)
    return Fn(
        _pt2e_qdq,
        s=torch.tensor(0.03),
        z=torch.tensor(0),
        w=w,
        ws=w.abs().amax((1, 2, 3)) / 127,
        wz=torch.zeros(6, dtype=torch.int64),
    )


CASES = [
    OpCase(
        "aten_conv_relu_pools",
        lambda: nn.Sequential(
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.ReLU(), nn.AvgPool2d(2)
        ),
        inputs=(X,),
        trace=exported(X),
        layers={"CONVOLUTION": 1, "POOLING": 2},
    ),
    OpCase(
        "aten_conv1d_deconv",
        lambda: nn.Sequential(nn.Conv1d(4, 6, 3), nn.ConvTranspose1d(6, 4, 2, stride=2)),
        inputs=((2, 4, 10),),
        trace=exported((2, 4, 10)),
        layers={"DECONVOLUTION": 1},
    ),
    OpCase(
        "aten_deconv2d_adaptive_pool",
        lambda: nn.Sequential(nn.ConvTranspose2d(4, 3, 2, stride=2), nn.AdaptiveAvgPool2d(1)),
        inputs=(X,),
        trace=exported(X),
        layers={"DECONVOLUTION": 1},
    ),
    OpCase(
        "aten_linear_hardtanh",
        lambda: nn.Sequential(nn.Linear(8, 5), nn.ReLU6(inplace=True), nn.Hardtanh()),
        inputs=((3, 8),),
        trace=exported((3, 8)),
    ),
    OpCase("aten_activations", lambda: Fn(_activations), inputs=(X,), trace=exported(X)),
    OpCase("aten_elementwise", lambda: Fn(_elementwise), inputs=(X, X), trace=exported(X, X)),
    OpCase("aten_shapes", lambda: Fn(_shapes), inputs=(X,), trace=exported(X)),
    OpCase(
        "aten_products",
        lambda: Fn(_products, p=torch.randn(3, 4), q=torch.randn(4, 5)),
        inputs=((2, 3, 4), (2, 4, 5)),
        trace=exported((2, 3, 4), (2, 4, 5)),
        atol=1e-3,
    ),
    OpCase(
        "pt2e_qdq_ops",
        _pt2e_module,
        inputs=(X,),
        trace=exported(X),
        layers={"QUANTIZE": 2, "DEQUANTIZE": 3, "CONVOLUTION": 2},
        atol=1e-3,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_aten_case(case: OpCase) -> None:
    run_case(case)


def test_asymmetric_pt2e_qdq_is_refused_with_every_reason() -> None:
    def fn(m, x):
        q = qd.quantize_per_tensor.default(x, 0.02, 128, 0, 255, torch.uint8)
        return qd.dequantize_per_tensor.default(q, 0.02, 128, 0, 255, torch.uint8)

    gm = exported(X)(Fn(fn).eval())
    rows = {name: reason for name, _, reason, _ in find_unsupported(gm)}
    assert set(rows) == {"quantize_per_tensor", "dequantize_per_tensor"}
    assert all(
        "uint8 is not int8" in r and "zero point 128 is not 0" in r and "TensorRTQuantizer" in r for r in rows.values()
    )
