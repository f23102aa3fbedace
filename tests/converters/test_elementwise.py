"""Elementwise converters: tensors, constants and Python scalars on either side; in-place forms."""

from __future__ import annotations

import operator

import pytest
import torch

from fx2trt_pipeline import trt_api
from tests.converters.harness import OpCase, run_case
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

TWO = ((2, 3, 4), (2, 3, 4))


_INPLACE = {
    operator.add: operator.iadd,
    operator.sub: operator.isub,
    operator.mul: operator.imul,
    operator.truediv: operator.itruediv,
}


def inplace_trace(module: torch.nn.Module) -> torch.fx.GraphModule:
    """Trace, then turn ``a + b`` into ``operator.iadd(a, b)`` etc. (FX records ``+=`` on proxies as ``+``,
    other tracers keep the in-place operator)."""
    gm = torch.fx.symbolic_trace(module)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _INPLACE:
            node.target = _INPLACE[node.target]
    gm.recompile()
    return gm


def _use_after_inplace(m, a, b):
    c = a * 1.0
    d = c + b  # becomes operator.iadd(c, b): c itself is updated in eager torch
    return d * c


CASES = [
    OpCase("add_operator", lambda: Fn(lambda m, a, b: a + b), inputs=TWO, layers={"ELEMENTWISE": 1}),
    OpCase(
        "add_operator_broadcast_rank",
        lambda: Fn(lambda m, a, b: a + b),
        inputs=((2, 3, 4), (4,)),
        layers={"ELEMENTWISE": 1, "UNSQUEEZE": 1},
    ),
    OpCase(
        "add_scalar_left_dynamic_batch",
        lambda: Fn(lambda m, a: 2.5 + a),
        inputs=((2, 3),),
        dynamic_batch=True,
    ),
    OpCase("add_torch_alpha", lambda: Fn(lambda m, a, b: torch.add(a, b, alpha=2)), inputs=TWO),
    OpCase("add_method", lambda: Fn(lambda m, a, b: a.add(b)), inputs=TWO),
    OpCase("add_method_inplace", lambda: Fn(lambda m, a, b: (a * 1.0).add_(b)), inputs=TWO),
    OpCase("add_inplace_operator_mutates", lambda: Fn(_use_after_inplace), inputs=TWO, trace=inplace_trace),
    OpCase("add_constant_buffer", lambda: Fn(lambda m, a: a + m.c, c=torch.arange(4.0)), inputs=((2, 3, 4),)),
    OpCase(
        "add_residual_quantized",
        lambda: Fn(lambda m, a, b: a + b),
        inputs=TWO,
        quantize=True,
        atol=1e-3,
        layers={"QUANTIZE": 2, "DEQUANTIZE": 2},
    ),
    OpCase("sub_operator_scalar_right", lambda: Fn(lambda m, a: a - 1), inputs=((2, 3),)),
    OpCase("sub_scalar_left", lambda: Fn(lambda m, a: 1 - a), inputs=((2, 3),)),
    OpCase("sub_torch_alpha", lambda: Fn(lambda m, a, b: torch.sub(a, b, alpha=0.5)), inputs=TWO),
    OpCase("sub_method", lambda: Fn(lambda m, a, b: a.sub(b)), inputs=TWO),
    OpCase("sub_method_inplace", lambda: Fn(lambda m, a, b: (a * 1.0).sub_(b)), inputs=TWO),
    OpCase("sub_inplace_operator", lambda: Fn(lambda m, a, b: (a * 1.0) - b), inputs=TWO, trace=inplace_trace),
    OpCase("mul_operator", lambda: Fn(lambda m, a, b: a * b), inputs=TWO),
    OpCase("mul_torch_scalar", lambda: Fn(lambda m, a: torch.mul(a, 0.5)), inputs=((2, 3),)),
    OpCase("mul_method", lambda: Fn(lambda m, a, b: a.mul(b)), inputs=TWO),
    OpCase("mul_method_inplace", lambda: Fn(lambda m, a, b: (a * 1.0).mul_(b)), inputs=TWO),
    OpCase("mul_inplace_operator", lambda: Fn(lambda m, a, b: (a + 0.0) * 3.0), inputs=TWO, trace=inplace_trace),
    OpCase("div_operator", lambda: Fn(lambda m, a, b: a / (b * b + 1)), inputs=TWO),
    OpCase("div_scalar_left", lambda: Fn(lambda m, a: 2 / (a * a + 1)), inputs=((2, 3),)),
    OpCase(
        "div_torch_floor",
        lambda: Fn(lambda m, a, b: torch.div(a * 4, b * b + 1, rounding_mode="floor")),
        inputs=TWO,
    ),
    OpCase("div_method", lambda: Fn(lambda m, a, b: a.div(b * b + 1)), inputs=TWO),
    OpCase("div_method_inplace", lambda: Fn(lambda m, a, b: (a * 1.0).div_(2.0)), inputs=TWO),
    OpCase(
        "div_inplace_operator",
        lambda: Fn(lambda m, a, b: (a * 1.0) / (b * b + 4.0)),
        inputs=TWO,
        trace=inplace_trace,
    ),
    OpCase(
        "floordiv_shape_arithmetic_dynamic",
        lambda: Fn(lambda m, a: a.view(a.size(0) // 1, a.size(1) // 2, -1)),
        inputs=((2, 4, 3),),
        dynamic_batch=True,
    ),
    OpCase("floordiv_tensor", lambda: Fn(lambda m, a: operator.floordiv(a * 3, 2)), inputs=((2, 3),)),
    OpCase(
        "minimum_channel_bound",  # the per-channel clamp bound left by cross-layer equalization
        lambda: Fn(lambda m, a: torch.minimum(torch.relu(a), m.bound), bound=torch.rand(1, 3, 1, 1) + 0.2),
        inputs=((2, 3, 4, 4),),
        layers={"ELEMENTWISE": 1},
    ),
    OpCase("maximum_tensors", lambda: Fn(lambda m, a, b: torch.maximum(a, b)), inputs=TWO, layers={"ELEMENTWISE": 1}),
]
CASES += [
    OpCase(
        "eq_tensors_and_python_shape_check",
        lambda: Fn(lambda m, x, y: (x == y).to(x.dtype) * (x.shape[1] == 3) + (x.shape[0] != 7)),
        inputs=lambda: (torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 3.0]])),
    ),
    OpCase("mod_of_static_sizes", lambda: Fn(lambda m, x: x * (x.shape[-1] % 3)), inputs=((2, 5),)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_elementwise_case(case: OpCase) -> None:
    run_case(case)


def test_static_size_arithmetic_stays_in_python() -> None:
    case = OpCase("static", lambda: Fn(lambda m, a: a.view(a.size(0), a.size(1) * a.size(2))), inputs=((2, 3, 4),))
    converted = run_case(case)
    assert dict(converted.layer_types()) == {"SHUFFLE": 1}
