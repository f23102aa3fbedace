"""Unary math and power converters: every torch function, Tensor method and ``-x`` against eager torch."""

from __future__ import annotations

import operator

import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.converters.unary import _FUNCTIONS
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import network_from_graph_module
from tests.converters.harness import OpCase, run_case, trace_module
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")


def _domain(fn: object, x: torch.Tensor) -> torch.Tensor:
    """An input inside the op's domain: positive for log / sqrt / reciprocal, inside (-1, 1) for asin / acos."""
    if fn in (torch.log, torch.sqrt, torch.reciprocal):
        return x.abs() + 0.5
    if fn in (torch.asin, torch.acos):
        return torch.tanh(x) * 0.9
    return x * 2.5  # floor / ceil / sign see values on both sides of integers and of zero


FUNCTIONS = list(_FUNCTIONS)

CASES = [
    OpCase(
        "unary_torch_functions",
        lambda: Fn(lambda m, x: tuple(fn(_domain(fn, x)) for fn in FUNCTIONS)),
        inputs=((2, 3, 4),),
    ),
    OpCase(
        "unary_tensor_methods_dynamic_batch",
        lambda: Fn(lambda m, x: tuple(getattr(_domain(fn, x), fn.__name__)() for fn in FUNCTIONS)),
        inputs=((2, 3, 4),),
        dynamic_batch=True,
    ),
    OpCase("unary_neg_operator", lambda: Fn(lambda m, x: -x + 1.0), inputs=((2, 5),), layers={"UNARY": 1}),
    OpCase(
        "unary_exp_of_int_input_is_float",
        lambda: Fn(lambda m, x: torch.exp(x.to(torch.int32)) + torch.abs(x.to(torch.int32))),
        inputs=((2, 5),),
    ),
    OpCase(
        "pow_tensor_scalar_and_scalar_tensor",
        lambda: Fn(
            lambda m, x: (x**2, torch.pow(x.abs() + 0.5, x), (x.abs() + 0.1).pow(0.5), 2.0**x, x**m.e),
            e=torch.tensor(3.0),
        ),
        inputs=((2, 3, 4),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_unary_case(case: OpCase) -> None:
    run_case(case)


def test_each_function_maps_to_its_own_operation() -> None:
    """A converter mixing up two operations (EXP for LOG) fails here even where values happen to be close."""
    trt = trt_api.get_trt()
    for fn, op in _FUNCTIONS.items():
        gm = trace_module(Fn(lambda m, x, fn=fn: fn(x)))
        _, network, _ = network_from_graph_module(gm, [InputSpec("x", (3,))])
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        (layer,) = [la for la in layers if la.type.name == "UNARY"]
        layer.__class__ = trt.IUnaryLayer
        assert layer.op == getattr(trt.UnaryOperation, op), fn


def test_python_numbers_stay_python() -> None:
    """``x.shape[1] ** 2`` of a static size is computed in Python: no layer, an int in the reshape."""
    case = OpCase("pow_of_sizes", lambda: Fn(lambda m, x: x.reshape(-1, x.shape[1] ** 2)), inputs=((2, 4, 4),))
    converted = run_case(case)
    assert any(n.target is operator.pow for n in converted.gm.graph.nodes)
    assert not converted.layers_of("ELEMENTWISE")
