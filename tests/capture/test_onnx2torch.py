"""onnx2torch graphs at capture: every node module lowered to torch ops, checked against ONNX Runtime on the
ONNX model itself (an independent implementation), at the example batch and at another batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fx2trt_pipeline.capture import capture
from fx2trt_pipeline.capture.foreign import NOT_LOWERED
from fx2trt_pipeline.capture.static_values import is_onnx2torch_module
from fx2trt_pipeline.errors import CaptureError

onnx = pytest.importorskip("onnx")
onnx2torch = pytest.importorskip("onnx2torch", reason="onnx2torch (the foreign extra) is not installed")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # onnx2torch warns about resize modes


def _model(nodes: list, in_shape: tuple[int, ...], **constants: np.ndarray):
    """An ONNX model ``x -> nodes -> y`` (``x`` float32 with a symbolic batch ``N``), constants as initializers."""
    inits = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in constants.items()]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _lowered(model, shape: tuple[int, ...]) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """(onnx2torch's graph, the captured graph) after checking the capture against ONNX Runtime."""
    original = onnx2torch.convert(model).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    gm = capture(original, example_inputs=(x,))
    kept = [
        n.name for n in gm.graph.nodes if n.op == "call_module" and is_onnx2torch_module(gm.get_submodule(n.target))
    ]
    assert not kept, f"onnx2torch modules left: {kept}"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (shape[0], shape[0] + 2):  # the lowering must hold at other batch sizes too
        xb = torch.randn((batch, *shape[1:]), generator=torch.Generator().manual_seed(batch))
        want = torch.from_numpy(session.run(None, {"x": xb.numpy()})[0])
        with torch.no_grad():
            got = gm(xb)
        assert got.shape == want.shape, (batch, got.shape, want.shape)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    return original, gm


def _targets(gm: torch.fx.GraphModule) -> set:
    return {n.target for n in gm.graph.nodes if n.op in ("call_function", "call_method")}


def _int64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_resize_nearest_by_scales_and_linear_by_sizes_read_from_shapes() -> None:
    nodes = [
        helper.make_node(
            "Resize",
            ["x", "", "scales"],
            ["up"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        helper.make_node("Shape", ["up"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["up", "", "", "sizes"], ["y"], mode="linear"),
    ]
    model = _model(
        nodes,
        (2, 3, 5, 6),
        scales=np.array([1, 1, 2, 2], np.float32),
        zero=_int64(0),
        two=_int64(2),
        hw=_int64(7, 9),
    )
    _, gm = _lowered(model, (2, 3, 5, 6))
    calls = [n for n in gm.graph.nodes if n.target is torch.nn.functional.interpolate]
    assert [c.kwargs["mode"] for c in calls] == ["nearest", "bilinear"]
    assert calls[0].kwargs["scale_factor"] == (2.0, 2.0) and calls[1].kwargs["size"] == (7, 9)


def test_reshape_with_copied_dims_and_a_batch_read_from_the_shape() -> None:
    nodes = [
        helper.make_node("Reshape", ["x", "copy_first"], ["r"]),  # [0, -1]: ONNX's 0 copies the dim
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
        helper.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y"]),
    ]
    model = _model(
        nodes, (2, 4, 6), copy_first=_int64(0, -1), zero=np.array(0, np.int64), zero1=_int64(0), rest=_int64(3, 8)
    )
    _, gm = _lowered(model, (2, 4, 6))
    reshapes = [n.args[1] for n in gm.graph.nodes if n.target is torch.reshape]
    # ONNX's 0 copied the batch: read from the tensor (the -1 is taken); the batch from Shape: the one -1
    assert reshapes[0][0].target == "size" and reshapes[0][1] == -1
    assert reshapes[1] == (-1, 3, 8)


def test_expand_split_concat_and_binary_math_with_constants() -> None:
    nodes = [
        helper.make_node("Expand", ["x", "shape"], ["e"]),  # (N, 1, 4) with (1, 3, 4) -> (N, 3, 4)
        helper.make_node("Split", ["e", "sizes"], ["a", "b"], axis=2),
        helper.make_node("Mul", ["a", "two"], ["a2"]),
        helper.make_node("Sub", ["offsets", "b"], ["b2"]),  # a constant on the left
        helper.make_node("Div", ["b2", "four"], ["b3"]),
        helper.make_node("Pow", ["a2", "two"], ["a3"]),
        helper.make_node("Add", ["a3", "a2"], ["a4"]),
        helper.make_node("Concat", ["a4", "b3"], ["y"], axis=2),
    ]
    model = _model(
        nodes,
        (2, 1, 4),
        shape=_int64(1, 3, 4),
        sizes=_int64(1, 3),
        two=np.array(2.0, np.float32),
        four=np.array([4.0], np.float32),
        offsets=np.arange(9, dtype=np.float32).reshape(3, 3),
    )
    _, gm = _lowered(model, (2, 1, 4))
    muls = [n for n in gm.graph.nodes if n.target.__class__.__name__ == "builtin_function_or_method" and n.args]
    assert any(2.0 in n.args for n in muls)  # one-element constants became Python numbers
    assert {"expand", torch.split, torch.cat} <= _targets(gm)


def test_gather_and_slice_become_indexing() -> None:
    nodes = [
        helper.make_node("Gather", ["x", "one"], ["g"], axis=2),  # scalar index: drops the dim
        helper.make_node("Gather", ["x", "range"], ["h"], axis=2),  # evenly spaced: a strided slice
        helper.make_node("Slice", ["h", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Unsqueeze", ["g", "axes1"], ["g1"]),
        helper.make_node("Add", ["s", "g1"], ["y"]),
    ]
    model = _model(
        nodes,
        (2, 3, 8),
        one=np.array(1, np.int64),
        range=_int64(1, 3, 5, 7),
        starts=_int64(-3),
        ends=_int64(np.iinfo(np.int64).max),
        axes=_int64(2),
        steps=_int64(1),
        axes1=_int64(2),
    )
    _, gm = _lowered(model, (2, 3, 8))
    import operator

    assert operator.getitem in _targets(gm) and torch.index_select not in _targets(gm)


def test_static_subgraphs_fold_and_shape_ops_lower() -> None:
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["cshape"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5])
        ),
        helper.make_node("Range", ["start", "limit", "delta"], ["ramp"]),
        helper.make_node("Cast", ["ramp"], ["rampf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ones", "rampf"], ["grid"]),  # static: folded into one constant
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Add", ["t", "grid"], ["u"]),
        helper.make_node("Exp", ["u"], ["e"]),
        helper.make_node("Reciprocal", ["e"], ["rec"]),
        helper.make_node("Sqrt", ["rec"], ["sq"]),
        helper.make_node("Unsqueeze", ["sq", "axes"], ["un"]),
        helper.make_node("Squeeze", ["un", "axes"], ["y"]),
    ]
    model = _model(
        nodes,
        (2, 3, 4),
        cshape=_int64(4, 3),
        start=np.array(0, np.int64),
        limit=np.array(3, np.int64),
        delta=np.array(1, np.int64),
        axes=_int64(1),
    )
    _, gm = _lowered(model, (2, 3, 4))
    constants = [n for n in gm.graph.nodes if n.op == "get_attr"]
    assert len(constants) == 1 and torch.equal(
        getattr(gm, constants[0].target), torch.full((4, 3), 1.5) * torch.arange(3.0)
    )
    assert {torch.exp, torch.reciprocal, torch.sqrt, torch.permute} <= _targets(gm)


def test_onnx2torch_graph_without_example_inputs_is_one_clear_error() -> None:
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])], (2, 6), shape=_int64(-1, 3, 2))
    with pytest.raises(CaptureError, match="pass example_inputs"):
        capture(onnx2torch.convert(model).eval())


def test_a_module_that_cannot_be_lowered_stays_with_the_reason() -> None:
    """Gather with indices computed from the data: kept as onnx2torch's module, the reason in its node's meta."""
    nodes = [
        helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0),
        helper.make_node("Gather", ["x", "i"], ["y"], axis=1),
    ]
    model = _model(nodes, (2, 5))
    original = onnx2torch.convert(model).eval()
    x = torch.randn(2, 5)
    gm = capture(original, example_inputs=(x,))
    reasons = {
        type(gm.get_submodule(n.target)).__name__: n.meta[NOT_LOWERED]
        for n in gm.graph.nodes
        if n.meta.get(NOT_LOWERED)
    }
    assert "computed from the input data" in reasons["OnnxGather"]
    assert "no lowering" in reasons["OnnxArgExtremum"]
    torch.testing.assert_close(gm(x), original(x))
