"""Activation converters (modules, functionals, torch.*, Tensor methods, in-place forms)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.network.network import find_unsupported
from tests.converters.harness import OpCase, run_case, trace_module
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

SHAPE = ((2, 4, 5, 5),)


def fn(f) -> callable:
    return lambda: Fn(lambda m, x: f(x))


CASES = [
    OpCase("relu_module", lambda: nn.ReLU(inplace=True), layers={"ACTIVATION": 1}),
    OpCase("relu_functional", fn(F.relu)),
    OpCase("relu_torch", fn(torch.relu)),
    OpCase("relu_torch_inplace", fn(lambda x: torch.relu_(x * 1.0))),
    OpCase("relu_method", fn(lambda x: x.relu())),
    OpCase("relu_method_inplace_mutates", fn(lambda x: (lambda y: (y.relu_(), y + 1)[1])(x * 2.0))),
    OpCase("relu6_module_quantized_input", lambda: nn.ReLU6(), quantize=True, atol=1e-3),
    OpCase("relu6_functional", fn(F.relu6)),
    OpCase("hardtanh_module", lambda: nn.Hardtanh(-0.5, 0.7)),
    OpCase("hardtanh_functional", fn(lambda x: F.hardtanh(x, -2.0, 0.25))),
    OpCase("leaky_relu_module", lambda: nn.LeakyReLU(0.2)),
    OpCase("leaky_relu_functional", fn(lambda x: F.leaky_relu(x, 0.05))),
    OpCase("leaky_relu_functional_inplace", fn(lambda x: F.leaky_relu_(x * 1.0, 0.3))),
    OpCase("prelu_module_per_channel", lambda: nn.PReLU(4, 0.1), layers={"PARAMETRIC_RELU": 1}),
    OpCase("prelu_functional_scalar", lambda: Fn(lambda m, x: F.prelu(x, m.a), a=torch.tensor([0.3]))),
    OpCase("sigmoid_module", lambda: nn.Sigmoid()),
    OpCase("sigmoid_torch", fn(torch.sigmoid)),
    OpCase("sigmoid_functional_as_method", fn(F.sigmoid)),
    OpCase("sigmoid_method_inplace", fn(lambda x: (x * 1.0).sigmoid_())),
    OpCase("tanh_module", lambda: nn.Tanh()),
    OpCase("tanh_torch", fn(torch.tanh)),
    OpCase("tanh_method", fn(lambda x: x.tanh())),
    OpCase("tanh_method_inplace", fn(lambda x: (x * 1.0).tanh_())),
    OpCase("silu_module", lambda: nn.SiLU(), layers={"ACTIVATION": 1, "ELEMENTWISE": 1}),
    OpCase("silu_functional", fn(F.silu)),
    OpCase("hardswish_module", lambda: nn.Hardswish()),
    OpCase("hardswish_functional", fn(F.hardswish)),
    OpCase("hardsigmoid_module", lambda: nn.Hardsigmoid()),
    OpCase("hardsigmoid_functional", fn(F.hardsigmoid)),
    OpCase("gelu_module", lambda: nn.GELU()),
    OpCase("gelu_functional_tanh", fn(lambda x: F.gelu(x, approximate="tanh"))),
    OpCase("softmax_module", lambda: nn.Softmax(dim=1), layers={"SOFTMAX": 1}),
    OpCase("softmax_functional_negative_dim", fn(lambda x: F.softmax(x, dim=-1))),
    OpCase("softmax_torch", fn(lambda x: torch.softmax(x, 2))),
    OpCase("softmax_method", fn(lambda x: x.softmax(1))),
]
for c in CASES:
    c.inputs = SHAPE


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_activation_case(case: OpCase) -> None:
    run_case(case)


def test_softmax_without_dim_is_refused() -> None:
    gm = trace_module(Fn(lambda m, x: F.softmax(x)))
    rows = find_unsupported(gm)
    assert len(rows) == 1 and "explicit int dim" in rows[0][2]
