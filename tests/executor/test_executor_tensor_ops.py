"""Network executor vs torch reference ops: Q/DQ, constants, casts, elementwise, unary, matrix
multiply, shuffle, concatenation, slice, gather, shape, select, reductions, softmax, top-k."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def test_quantize_rounds_half_to_even_and_saturates(net, trt, close):
    x = torch.tensor([0.25, 0.75, -0.25, -0.75, 1.25, 100.0, -100.0, 0.0])
    scale = torch.tensor(0.5)
    q = net.network.add_quantize(net.input("x", x.shape), net.const(scale), trt.int8)
    dq = net.network.add_dequantize(q.get_output(0), net.const(scale), trt.float32)
    got_q, got_dq = net.run({"x": x}, q.get_output(0), dq.get_output(0))
    close(got_q, torch.tensor([0, 2, 0, -2, 2, 127, -128, 0], dtype=torch.int8))
    close(got_dq, got_q.float() * 0.5)


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_per_channel_quantize_dequantize_match_qdq_ops(net, trt, close, axis):
    from fx2trt_pipeline.quantize import qdq_ops

    x = torch.randn(3, 4, 2, 5) * 4
    scale = torch.rand(x.shape[axis]) * 0.05 + 0.01
    q = net.network.add_quantize(net.input("x", x.shape), net.const(scale), trt.int8)
    q.axis = axis
    dq = net.network.add_dequantize(q.get_output(0), net.const(scale), trt.float32)
    dq.axis = axis
    got_q, got_dq = net.run({"x": x}, q.get_output(0), dq.get_output(0))
    close(got_q, qdq_ops.quantize(x, scale, axis))
    close(got_dq, qdq_ops.fake_quantize(x, scale, axis))


@pytest.mark.parametrize(
    "np_dtype,torch_dtype",
    [
        (np.float32, torch.float32),
        (np.int32, torch.int32),
        (np.int64, torch.int64),
        (np.int8, torch.int8),
        (np.float16, torch.float16),
        (np.bool_, torch.bool),
    ],
)
def test_constant_keeps_layer_dtype(net, close, np_dtype, torch_dtype):
    value = (np.arange(6).reshape(2, 3) % 3).astype(np_dtype)
    out = net.const(value)
    close(net.run1({}, out), torch.from_numpy(value).to(torch_dtype))


def test_cast_identity_and_shape(net, trt, close):
    x = torch.tensor([[1.7, -1.7, 2.5], [0.2, -0.5, 3.9]])
    inp = net.input("x", (-1, 3))
    cast = net.network.add_cast(inp, trt.int32)
    ident = net.network.add_identity(inp)
    shape = net.network.add_shape(inp)
    got = net.run({"x": x}, cast.get_output(0), ident.get_output(0), shape.get_output(0))
    close(got[0], x.to(torch.int32))
    close(got[1], x)
    close(got[2], torch.tensor([2, 3]))


_BINARY = {
    "SUM": torch.add,
    "PROD": torch.mul,
    "MAX": torch.maximum,
    "MIN": torch.minimum,
    "SUB": torch.sub,
    "DIV": torch.div,
    "POW": torch.pow,
    "FLOOR_DIV": lambda a, b: torch.floor(a / b),
    "EQUAL": torch.eq,
    "GREATER": torch.gt,
    "LESS": torch.lt,
}


@pytest.mark.parametrize("op", sorted(_BINARY))
def test_elementwise_float_with_broadcasting(net, trt, close, op):
    a, b = torch.rand(2, 3, 4) + 0.5, torch.rand(1, 3, 1) + 0.5
    b[0, 1, 0] = a[0, 1, 0]  # make EQUAL true somewhere
    layer = net.network.add_elementwise(
        net.input("a", a.shape), net.input("b", b.shape), getattr(trt.ElementWiseOperation, op)
    )
    close(net.run1({"a": a, "b": b}, layer.get_output(0)), _BINARY[op](a, b), atol=1e-6)


def test_elementwise_integer_division_truncates_and_logic_ops(net, trt, close):
    a, b = torch.tensor([7, -7, 7, -7], dtype=torch.int32), torch.tensor([2, 2, -2, -2], dtype=torch.int32)
    ia, ib = net.input("a", (4,), trt.int32), net.input("b", (4,), trt.int32)
    div = net.network.add_elementwise(ia, ib, trt.ElementWiseOperation.DIV)
    fdiv = net.network.add_elementwise(ia, ib, trt.ElementWiseOperation.FLOOR_DIV)
    p, q = torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])
    ip, iq = net.input("p", (4,), trt.bool), net.input("q", (4,), trt.bool)
    logic = [net.network.add_elementwise(ip, iq, getattr(trt.ElementWiseOperation, n)) for n in ("AND", "OR", "XOR")]
    got = net.run(
        {"a": a, "b": b, "p": p, "q": q},
        div.get_output(0),
        fdiv.get_output(0),
        *[layer.get_output(0) for layer in logic],
    )
    close(got[0], torch.tensor([3, -3, -3, 3], dtype=torch.int32))
    close(got[1], torch.tensor([3, -4, -4, 3], dtype=torch.int32))
    for g, ref in zip(got[2:], (p & q, p | q, p ^ q)):
        close(g, ref)


#: Each TensorRT ``UnaryOperation`` as a function of one Python float, written from the IUnaryLayer documentation
#: with the ``math`` module: an oracle apart from the executor's own torch table.
_SCALAR: dict[str, Callable[[float], float | bool]] = {
    "EXP": math.exp,
    "LOG": math.log,  # natural logarithm
    "SQRT": math.sqrt,
    "RECIP": lambda v: 1.0 / v,
    "ABS": abs,
    "NEG": lambda v: -v,
    "SIN": math.sin,
    "COS": math.cos,
    "TAN": math.tan,
    "SINH": math.sinh,
    "COSH": math.cosh,
    "ASIN": math.asin,
    "ACOS": math.acos,
    "ATAN": math.atan,
    "ASINH": math.asinh,
    "ACOSH": math.acosh,
    "ATANH": math.atanh,
    "CEIL": math.ceil,
    "FLOOR": math.floor,
    "ERF": math.erf,
    "NOT": lambda v: not v,
    "SIGN": lambda v: 0.0 if v == 0 else math.copysign(1.0, v),
    "ROUND": round,  # Python's round() goes half to even, as TensorRT's ROUND does: 2.5 -> 2, 3.5 -> 4
    "ISINF": math.isinf,
    "ISNAN": math.isnan,
}
_HALVES = [0.1, 0.5, 0.9, 2.5, 3.5, -0.5, -1.5, 0.25, 0.0]
#: Inputs inside each operation's domain (every other operation takes ``_HALVES``).
_DOMAIN = {
    "ASIN": [-0.9, -0.5, 0.0, 0.25, 0.9],
    "ACOS": [-0.9, -0.5, 0.0, 0.25, 0.9],
    "ATANH": [-0.9, -0.5, 0.0, 0.25, 0.9],
    "LOG": [0.1, 0.5, 1.0, 2.5, 30.0],
    "SQRT": [0.0, 0.1, 0.5, 2.25, 30.0],
    "ACOSH": [1.0, 1.5, 2.5, 10.0],
    "RECIP": [0.1, 0.5, -2.5, 3.5, -0.25],
    "ISINF": [1.0, math.inf, -math.inf, math.nan, 0.0, -2.0],
    "ISNAN": [1.0, math.inf, -math.inf, math.nan, 0.0, -2.0],
    "NOT": [True, False, False, True],
}


def test_the_oracle_covers_every_unary_operation(trt):
    assert set(_SCALAR) == set(trt.UnaryOperation.__members__)


@pytest.mark.parametrize("op", sorted(_SCALAR))
def test_unary_ops(net, trt, op):
    values = _DOMAIN.get(op, _HALVES)
    if op == "NOT":
        x, kind = torch.tensor(values), trt.bool
    else:
        x, kind = torch.tensor(values, dtype=torch.float32), trt.float32
    layer = net.network.add_unary(net.input("x", x.shape, kind), getattr(trt.UnaryOperation, op))
    got = net.run1({"x": x}, layer.get_output(0))
    results = [_SCALAR[op](v) for v in x.tolist()]
    if isinstance(results[0], bool):
        assert got.dtype == torch.bool and got.tolist() == results
        return
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(results, dtype=torch.float64).float(), rtol=2e-6, atol=1e-6)


def test_unary_not_and_select(net, trt, close):
    cond = torch.tensor([True, False, True])
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    c = net.input("c", (3,), trt.bool)
    neg = net.network.add_unary(c, trt.UnaryOperation.NOT)
    unsq = net.network.add_shuffle(neg.get_output(0))
    unsq.reshape_dims = (1, 3)
    sel = net.network.add_select(unsq.get_output(0), net.input("a", a.shape), net.input("b", b.shape))
    close(net.run1({"c": cond, "a": a, "b": b}, sel.get_output(0)), torch.where(~cond, a, b))


@pytest.mark.parametrize(
    "op0,op1",
    [
        ("NONE", "NONE"),
        ("TRANSPOSE", "NONE"),
        ("NONE", "TRANSPOSE"),
        ("VECTOR", "NONE"),
        ("NONE", "VECTOR"),
        ("VECTOR", "VECTOR"),
    ],
)
def test_matrix_multiply_operations(net, trt, close, op0, op1):
    shapes = {"NONE": ((2, 3, 4), (1, 4, 5)), "TRANSPOSE": ((2, 4, 3), (1, 5, 4)), "VECTOR": ((2, 4), (1, 4))}
    a, b = torch.randn(shapes[op0][0]), torch.randn(shapes[op1][1])
    layer = net.network.add_matrix_multiply(
        net.input("a", a.shape),
        getattr(trt.MatrixOperation, op0),
        net.input("b", b.shape),
        getattr(trt.MatrixOperation, op1),
    )
    ta = a.transpose(-1, -2) if op0 == "TRANSPOSE" else a
    tb = b.transpose(-1, -2) if op1 == "TRANSPOSE" else b
    if op0 == "VECTOR" and op1 == "VECTOR":
        expected = (ta * tb).sum(-1)
    elif op0 == "VECTOR":
        expected = torch.einsum("bk,bkn->bn", ta, tb.expand(2, -1, -1))
    elif op1 == "VECTOR":
        expected = torch.einsum("bmk,bk->bm", ta, tb.expand(2, -1))
    else:
        expected = ta @ tb
    close(net.run1({"a": a, "b": b}, layer.get_output(0)), expected, atol=1e-5)


def test_einsum(net, close):
    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    layer = net.network.add_einsum([net.input("a", a.shape), net.input("b", b.shape)], "bij,bjk->bik")
    close(net.run1({"a": a, "b": b}, layer.get_output(0)), torch.einsum("bij,bjk->bik", a, b), atol=1e-5)


def test_shuffle_transposes_and_reshape_placeholders(net, close):
    x = torch.randn(2, 3, 4, 5)
    inp = net.input("x", x.shape)
    s1 = net.network.add_shuffle(inp)
    s1.first_transpose, s1.reshape_dims, s1.second_transpose = (0, 2, 3, 1), (0, -1, 3), (2, 0, 1)
    s2 = net.network.add_shuffle(inp)
    s2.first_transpose = (3, 2, 1, 0)
    zero_dim = net.network.add_shuffle(net.input("e", (0, 4)))
    zero_dim.zero_is_placeholder, zero_dim.reshape_dims = False, (2, 0)
    e = torch.randn(0, 4)
    got = net.run({"x": x, "e": e}, s1.get_output(0), s2.get_output(0), zero_dim.get_output(0))
    close(got[0], x.permute(0, 2, 3, 1).reshape(2, -1, 3).permute(2, 0, 1))
    close(got[1], x.permute(3, 2, 1, 0))
    close(got[2], e.reshape(2, 0))


def test_shuffle_with_dynamic_shape_input(net, trt, close):
    x = torch.randn(3, 4, 6)
    inp = net.input("x", (-1, 4, 6))
    batch = net.network.add_slice(net.network.add_shape(inp).get_output(0), (0,), (1,), (1,))
    rest = net.const(np.array([2, 12], dtype=np.int64))
    shape = net.network.add_concatenation([batch.get_output(0), rest])
    shuffle = net.network.add_shuffle(inp)
    shuffle.set_input(1, shape.get_output(0))
    close(net.run1({"x": x}, shuffle.get_output(0)), x.reshape(3, 2, 12))


def test_concatenation_squeeze_unsqueeze(net, close):
    a, b = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    cat = net.network.add_concatenation([net.input("a", a.shape), net.input("b", b.shape)])
    cat.axis = 1
    unsq = net.network.add_unsqueeze(cat.get_output(0), net.const(np.array([0, 3], dtype=np.int64)))
    sq = net.network.add_squeeze(unsq.get_output(0), net.const(np.array([-2], dtype=np.int64)))
    got = net.run({"a": a, "b": b}, cat.get_output(0), unsq.get_output(0), sq.get_output(0))
    close(got[0], torch.cat([a, b], 1))
    close(got[1], torch.cat([a, b], 1)[None, :, :, None])
    close(got[2], torch.cat([a, b], 1)[None])


def test_slice_static_and_negative_stride(net, close):
    x = torch.randn(2, 6, 7)
    inp = net.input("x", x.shape)
    s1 = net.network.add_slice(inp, (0, 1, 0), (2, 2, 4), (1, 2, 2))
    s2 = net.network.add_slice(inp, (1, 5, 6), (1, 6, 7), (1, -1, -1))
    got = net.run({"x": x}, s1.get_output(0), s2.get_output(0))
    close(got[0], x[:, 1:5:2, 0:8:2])
    close(got[1], x[1:2].flip(1).flip(2))


@pytest.mark.parametrize("mode", ["WRAP", "CLAMP", "FILL", "REFLECT"])
def test_slice_sample_modes(net, trt, close, mode):
    x = torch.arange(5, dtype=torch.float32).reshape(1, 5)
    layer = net.network.add_slice(net.input("x", x.shape), (0, -2), (1, 9), (1, 1))
    layer.mode = getattr(trt.SampleMode, mode)
    if mode == "FILL":
        layer.set_input(4, net.const(np.array(9.0, dtype=np.float32)))
    expected = {
        "WRAP": [3, 4, 0, 1, 2, 3, 4, 0, 1],
        "CLAMP": [0, 0, 0, 1, 2, 3, 4, 4, 4],
        "FILL": [9, 9, 0, 1, 2, 3, 4, 9, 9],
        "REFLECT": [2, 1, 0, 1, 2, 3, 4, 3, 2],
    }[mode]
    close(net.run1({"x": x}, layer.get_output(0)), torch.tensor([expected], dtype=torch.float32))


def test_slice_with_dynamic_inputs(net, close):
    x = torch.randn(4, 6)
    inp = net.input("x", (-1, 6))
    layer = net.network.add_slice(inp, (0, 0), (1, 1), (1, 1))
    size = net.network.add_shape(inp).get_output(0)
    layer.set_input(1, net.const(np.array([1, 2], dtype=np.int64)))
    layer.set_input(
        2,
        net.network.add_elementwise(
            size, net.const(np.array([2, 4], dtype=np.int64)), net.trt.ElementWiseOperation.SUB
        ).get_output(0),
    )
    layer.set_input(3, net.const(np.array([1, 1], dtype=np.int64)))
    close(net.run1({"x": x}, layer.get_output(0)), x[1:3, 2:4])


def test_gather_modes(net, trt, close):
    data = torch.randn(3, 4, 5)
    inp = net.input("d", data.shape)
    idx = torch.tensor([[0, -1], [2, 1]], dtype=torch.int32)
    default = net.network.add_gather(inp, net.const(idx), 1)
    batched_idx = torch.tensor([[1], [0], [3]], dtype=torch.int32)
    batched = net.network.add_gather(inp, net.const(batched_idx), 1)
    batched.num_elementwise_dims = 1
    elem_idx = torch.randint(0, 4, (3, 2, 5), dtype=torch.int32)
    element = net.network.add_gather_v2(inp, net.const(elem_idx), trt.GatherMode.ELEMENT)
    element.axis = 1
    nd_idx = torch.tensor([[1, 3], [0, 0]], dtype=torch.int32)
    nd = net.network.add_gather_v2(inp, net.const(nd_idx), trt.GatherMode.ND)
    got = net.run({"d": data}, *(layer.get_output(0) for layer in (default, batched, element, nd)))
    close(got[0], data[:, idx.long() % 4])
    close(got[1], torch.stack([data[b, batched_idx[b].long()] for b in range(3)]))
    close(got[2], torch.gather(data, 1, elem_idx.long()))
    close(got[3], data[nd_idx[:, 0].long(), nd_idx[:, 1].long()])


@pytest.mark.parametrize("op", ["SUM", "PROD", "MAX", "MIN", "AVG"])
@pytest.mark.parametrize("keep", [True, False])
def test_reduce(net, trt, close, op, keep):
    x = torch.rand(2, 3, 4, 5) + 0.5
    layer = net.network.add_reduce(net.input("x", x.shape), getattr(trt.ReduceOperation, op), 1 << 1 | 1 << 3, keep)
    ref = {
        "SUM": lambda t: t.sum((1, 3), keep),
        "AVG": lambda t: t.mean((1, 3), keep),
        "MAX": lambda t: t.amax((1, 3), keep),
        "MIN": lambda t: t.amin((1, 3), keep),
        "PROD": lambda t: t.prod(3, keep).prod(1, keep),
    }[op]
    close(net.run1({"x": x}, layer.get_output(0)), ref(x), atol=1e-5)


def test_softmax_topk_cumulative(net, trt, close):
    x = torch.randn(2, 5, 3)
    inp = net.input("x", x.shape)
    soft = net.network.add_softmax(inp)
    soft.axes = 1 << 1
    topk = net.network.add_topk(inp, trt.TopKOperation.MIN, 2, 1 << 1)
    cum = net.network.add_cumulative(
        inp, net.const(np.array(1, dtype=np.int32)), trt.CumulativeOperation.SUM, True, True
    )
    got = net.run({"x": x}, soft.get_output(0), topk.get_output(0), topk.get_output(1), cum.get_output(0))
    close(got[0], F.softmax(x, 1))
    values, indices = torch.topk(x, 2, 1, largest=False)
    close(got[1], values)
    close(got[2], indices.to(torch.int32))
    close(got[3], x.flip(1).cumsum(1).flip(1) - x, atol=1e-6)
