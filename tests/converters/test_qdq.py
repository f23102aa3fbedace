"""Q/DQ converters: our fx2trt ops (per tensor / per channel) and torch.ao's quantize / dequantize."""

from __future__ import annotations

import warnings

import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.network.network import find_unsupported
from fx2trt_pipeline.quantize.qdq_ops import DEQUANTIZE, QUANTIZE
from tests.converters.harness import OpCase, run_case, trace_module
from tests.converters.qdq_graph import Fn

pytestmark = [
    pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

X = ((2, 3, 4, 4),)
S = torch.tensor(0.02)
S3 = torch.tensor([0.01, 0.02, 0.03])
Z3 = torch.zeros(3, dtype=torch.int64)


def _qdq_default(m, x):
    return DEQUANTIZE(QUANTIZE(x, m.s, None), m.s, None)


def _qdq_per_channel(m, x):
    return DEQUANTIZE(QUANTIZE(x, m.s, 1), m.s, 1)


def _qdq_packet(m, x):
    return torch.ops.fx2trt.dequantize(torch.ops.fx2trt.quantize(x, m.s, None), m.s, None)


def _ao_per_tensor(m, x):
    return torch.quantize_per_tensor(x, m.s, m.z, torch.qint8).dequantize()


def _ao_per_tensor_python_scale(m, x):
    return torch.dequantize(torch.quantize_per_tensor(x, 0.03, 0, torch.qint8))


def _ao_per_channel(m, x):
    return torch.quantize_per_channel(x, m.s, m.z, 1, torch.qint8).dequantize()


CASES = [
    OpCase(
        "fx2trt_qdq_per_tensor_dynamic_batch",
        lambda: Fn(_qdq_default, s=S),
        inputs=X,
        dynamic_batch=True,
        layers={"QUANTIZE": 1, "DEQUANTIZE": 1, "CONSTANT": 1},
    ),
    OpCase("fx2trt_qdq_per_channel", lambda: Fn(_qdq_per_channel, s=S3), inputs=X, atol=1e-3),
    OpCase("fx2trt_qdq_overload_packet", lambda: Fn(_qdq_packet, s=S), inputs=X),
    OpCase(
        "ao_quantize_per_tensor_dequantize_method",
        lambda: Fn(_ao_per_tensor, s=S, z=torch.tensor(0)),
        inputs=X,
        atol=0.021,
        rtol=0,
    ),
    OpCase(
        "ao_quantize_per_tensor_torch_dequantize",
        lambda: Fn(_ao_per_tensor_python_scale),
        inputs=X,
        atol=0.031,
        rtol=0,
    ),
    OpCase("ao_quantize_per_channel", lambda: Fn(_ao_per_channel, s=S3, z=Z3), inputs=X, atol=0.031, rtol=0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_qdq_case(case: OpCase) -> None:
    run_case(case)


def test_per_channel_axis_and_shared_scale_constant() -> None:
    converted = run_case(CASES[1])
    (q,) = converted.layers_of("QUANTIZE")
    (dq,) = converted.layers_of("DEQUANTIZE")
    trt = trt_api.get_trt()
    q.__class__, dq.__class__ = trt.IQuantizeLayer, trt.IDequantizeLayer
    assert q.axis == 1 and dq.axis == 1
    assert q.get_input(1).name == dq.get_input(1).name == "op_s"  # one constant, named after its get_attr
    assert q.get_output(0).dtype == trt.int8 and dq.get_output(0).dtype == trt.float32


@pytest.mark.parametrize(
    "fn, buffers, reason",
    [
        (
            lambda m, x: DEQUANTIZE(QUANTIZE(x, x.abs().amax() / 127, None), m.s, None),
            {"s": S},
            "build-time constant",
        ),
        (_qdq_default, {"s": torch.tensor(-0.1)}, "strictly positive"),
        (_qdq_default, {"s": S3}, "one value"),
        (
            lambda m, x: torch.quantize_per_tensor(x, m.s, m.z, torch.quint8).dequantize(),
            {"s": S, "z": torch.tensor(0)},
            "qint8",
        ),
        (_ao_per_tensor, {"s": S, "z": torch.tensor(3)}, "zero points must be 0"),
    ],
)
def test_unconvertible_qdq_is_refused_with_reason(fn, buffers, reason) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = trace_module(Fn(fn, **buffers))
    rows = find_unsupported(gm)
    assert rows and any(reason in row[2] for row in rows), rows
