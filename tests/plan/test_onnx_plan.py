"""The ONNX route (TensorRT's OnnxParser on our QDQ export) plans the same engine as our own network.

Measured with TensorRT-RTX 1.7.1 on a CPU build: resnet18 (53 engine layers) and mobilenet_v2 (107) give the same
plan with no layer left out or normalised: every layer, ``signal``/``wait`` stream markers included, has the
same type and input/output dtypes at the same position.

The models get BatchNorm statistics from a few train-mode forwards on purpose. With freshly initialised BN the
folded conv bias is exactly zero; torch's ONNX exporter drops an all-zero Conv/Gemm bias and our network keeps
it, so the epilogue kernels differ below the signature (``MulAddRelu...`` vs ``MulRelu...``) and resnet18's
residual-add kernels list their (Int8, Float) inputs in the other order, which the signature does see. Trained
weights have no all-zero biases (mobilenet_v2's zero-initialised classifier bias, left as is here, changes only
the last kernel's fused ops, not its signature).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fx2trt_pipeline import trt_api

if not trt_api.is_available():
    pytest.skip("no TensorRT library installed (pip install 'fx2trt-pipeline[rtx]')", allow_module_level=True)
pytest.importorskip("onnx")
torchvision = pytest.importorskip("torchvision")

import fx2trt_pipeline as ftp  # noqa: E402
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network  # noqa: E402
from fx2trt_pipeline.engine.engine_plan import EnginePlan  # noqa: E402
from fx2trt_pipeline.errors import EngineBuildError  # noqa: E402
from fx2trt_pipeline.network.network import network_from_graph_module  # noqa: E402
from fx2trt_pipeline.plan.audit import PlanAudit, audit_plan  # noqa: E402
from fx2trt_pipeline.plan.onnx_plan import audit_onnx, compare_plans, plan_from_onnx, plan_signature  # noqa: E402

SIZE, BATCH = 96, 2


def _model(name: str) -> torch.nn.Module:
    """Random weights, BN statistics from data (see the module docstring for why), eval mode."""
    model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, SIZE, SIZE, generator=gen))
    return model.eval()


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def plans(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[EnginePlan, EnginePlan]:
    """(our network's plan, the ONNX parser's plan) of one quantized torchvision model."""
    torch.manual_seed(0)
    model = _model(request.param)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    spec = ftp.InputSpec("x", (BATCH, 3, SIZE, SIZE))
    builder, network, _ctx = network_from_graph_module(qgm, [spec], builder=create_builder())
    _, ours = engine_and_plan_from_network(builder, network, [spec])
    path = ftp.export_qdq_onnx(qgm, (x,), tmp_path_factory.mktemp("onnx") / "model.onnx", input_names=["x"])
    theirs = plan_from_onnx(path, [spec])
    assert ours is not None
    _AUDIT_INPUTS[request.param] = (path, spec, audit_plan(network, ours, qgm))
    return ours, theirs


#: model -> (its QDQ ONNX, input spec, the audit of our own network's plan), filled by the ``plans`` fixture.
_AUDIT_INPUTS: dict[str, tuple[Path, ftp.InputSpec, PlanAudit]] = {}


def test_onnx_route_audits_like_our_network(
    plans: tuple[EnginePlan, EnginePlan], request: pytest.FixtureRequest
) -> None:
    """The precision audit of the QDQ ONNX through TensorRT's parser (trtexec's route) counts what ours counts."""
    path, spec, ours = _AUDIT_INPUTS[request.node.callspec.params["plans"]]
    theirs = audit_onnx(path, [spec])
    assert theirs.passed and ours.passed
    assert theirs.counts() == ours.counts() and ours.counts()["int8_in_plan"] > 10
    assert all(row.node.startswith("node_") for row in theirs.rows)  # named after the ONNX nodes


def test_onnx_parser_plans_the_same_engine_as_our_network(plans: tuple[EnginePlan, EnginePlan]) -> None:
    ours, theirs = plans
    result = compare_plans(ours, theirs)
    assert result, str(result)
    assert plan_signature(ours) == plan_signature(theirs)
    # Not vacuous: both plans run every conv and the classifier's gemm in INT8, and agree on the bytes moved.
    summary = ours.summary()
    assert summary["int8_compute_layers"] > 10 and summary["float_compute_layers"] == 0
    assert theirs.summary()["int8_compute_layers"] == summary["int8_compute_layers"]
    assert theirs.bytes_per_item() == pytest.approx(ours.bytes_per_item(), rel=1e-3)


def test_a_plan_with_one_conv_removed_does_not_compare_equal(plans: tuple[EnginePlan, EnginePlan]) -> None:
    ours, theirs = plans
    index = next(i for i, layer in enumerate(theirs.layers) if layer.type == "correlation")
    fewer = replace(theirs, layers=theirs.layers[:index] + theirs.layers[index + 1 :])
    result = compare_plans(ours, fewer)
    assert not result
    assert result.total_differences == 1 and result.differences[0][:2] == (index, None)
    removed = plan_signature(ours)[index]
    assert (removed, result.ours_counts[removed], result.ours_counts[removed] - 1) in result.count_differences()
    assert f"[{index}] correlation (Int8) -> (Float)" in str(result) and "(none)" in str(result)


def test_a_plan_with_one_dtype_changed_does_not_compare_equal(plans: tuple[EnginePlan, EnginePlan]) -> None:
    ours, theirs = plans
    index = next(i for i, layer in enumerate(theirs.layers) if layer.type == "kgen" and layer.outputs)
    layer = theirs.layers[index]
    changed = replace(layer, outputs=(replace(layer.outputs[0], dtype="Half"), *layer.outputs[1:]))
    result = compare_plans(ours, replace(theirs, layers=(*theirs.layers[:index], changed, *theirs.layers[index + 1 :])))
    assert not result and result.total_differences == 1
    assert result.differences[0][:2] == (index, index) and result.differences[0][3][2][0] == "Half"
    assert "plans differ" in str(result)


def test_parser_errors_name_the_file_and_quote_the_parser(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    node = onnx.helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery")
    path = tmp_path / "unknown_op.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x], [y])), path)
    with pytest.raises(EngineBuildError, match="could not parse .*unknown_op.onnx") as info:
        plan_from_onnx(path, [ftp.InputSpec("x", (1, 4))])
    assert "node mystery (NoSuchOp)" in str(info.value)
    with pytest.raises(EngineBuildError, match="missing.onnx does not exist"):
        plan_from_onnx(tmp_path / "missing.onnx", [])
