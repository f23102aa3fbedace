"""Linear / matmul / bmm / addmm converters, float and on int8 weights, plus torch.ao reference Linear."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from tests.converters.harness import OpCase, run_case
from tests.converters.qdq_graph import Fn, ao_reference, ftp_quantized

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")


def _w(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(2)) * 0.3


def _reference(model: nn.Module, shape: tuple) -> dict:
    example = (torch.randn(shape, generator=torch.Generator().manual_seed(0)),)
    return dict(
        make=lambda: model,
        inputs=lambda: example,
        trace=lambda m: ao_reference(m, example),
        atol=0.05,
        rtol=0.05,
    )


class LinearRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.relu = nn.Linear(8, 6), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.fc(x))


CASES = [
    OpCase("linear_module_2d", lambda: nn.Linear(8, 5), inputs=((3, 8),), layers={"MATRIX_MULTIPLY": 1}),
    OpCase(
        "linear_module_3d_dynamic_batch",
        lambda: nn.Linear(8, 5, bias=False),
        inputs=((2, 4, 8),),
        dynamic_batch=True,
        layers={"MATRIX_MULTIPLY": 1},
    ),
    OpCase(
        "linear_quantized_module",
        lambda: nn.Linear(8, 5),
        inputs=((3, 8),),
        quantize=True,
        atol=1e-3,
        layers={"MATRIX_MULTIPLY": 1, "QUANTIZE": 1, "DEQUANTIZE": 2},
    ),
    OpCase(
        "linear_functional_int8",
        lambda: Fn(lambda m, x: F.linear(x, m.w, m.b), w=_w(5, 8), b=_w(5)),
        inputs=((3, 8),),
        quantize=True,
        atol=1e-3,
        layers={"MATRIX_MULTIPLY": 1, "ELEMENTWISE": 1},
    ),
    OpCase(
        "matmul_torch",
        lambda: Fn(lambda m, a, b: torch.matmul(a, b)),
        inputs=((2, 3, 4), (4, 5)),
        layers={"MATRIX_MULTIPLY": 1},
    ),
    OpCase("matmul_operator_vector", lambda: Fn(lambda m, a, b: operator.matmul(a, b)), inputs=((2, 3, 4), (4,))),
    OpCase("matmul_method_batched", lambda: Fn(lambda m, a, b: a.matmul(b)), inputs=((2, 3, 4), (2, 4, 5))),
    OpCase("matmul_constant_rhs", lambda: Fn(lambda m, a: a @ m.w, w=_w(4, 6)), inputs=((2, 4),)),
    OpCase("bmm_torch", lambda: Fn(lambda m, a, b: torch.bmm(a, b)), inputs=((2, 3, 4), (2, 4, 5))),
    OpCase("bmm_method", lambda: Fn(lambda m, a, b: a.bmm(b)), inputs=((2, 3, 4), (2, 4, 5))),
    OpCase(
        "addmm_alpha_beta",
        lambda: Fn(lambda m, x: torch.addmm(m.b, x, m.w, beta=0.5, alpha=2.0), w=_w(4, 6), b=_w(6)),
        inputs=((3, 4),),
    ),
    OpCase("reference_linear_relu_and_linear", **_reference(nn.Sequential(LinearRelu(), nn.Linear(6, 3)), (4, 8))),
    OpCase(
        "linear_integer_arithmetic",
        lambda: nn.Linear(40, 7),
        **ftp_quantized((3, 40)),
        layers={"MATRIX_MULTIPLY": 1, "QUANTIZE": 1},
    ),
    OpCase(  # attention's Q @ K^T: both operands quantized activations -> torch.ops.fx2trt.int8_matmul
        "matmul_integer_arithmetic",
        lambda: Fn(lambda m, x: torch.matmul(x, x.transpose(-1, -2))),
        **ftp_quantized((2, 3, 5, 16)),
        layers={"MATRIX_MULTIPLY": 1},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_linear_case(case: OpCase) -> None:
    run_case(case)
