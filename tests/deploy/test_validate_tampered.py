"""``fx2trt validate`` catches real errors in the QDQ ONNX of a build (exit 1, naming the layer), while the
untouched build passes tie-aware parity."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import BuildRun, run_cli

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from tests.validate import tamper  # noqa: E402  (needs onnx)

FAST = ["--max-images", "8"]


def _onnx_file(run_dir: Path) -> Path:
    (path,) = run_dir.glob("*.onnx")
    return path


def _square_conv(model: onnx.ModelProto) -> str:
    """A conv layer whose int8 kernel has C_out == C_in (so axis 1 is a valid, wrong, axis)."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return next(
        n.input[0][: -len("_weight_int8")]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0].endswith("_weight_int8")
        and len(shapes[n.input[0]]) == 4
        and shapes[n.input[0]][0] == shapes[n.input[0]][1]
    )


def _activation_q(model: onnx.ModelProto) -> tuple[int, str]:
    """``(index, tensor name)`` of an activation QuantizeLinear with its own scale initializer (not merged
    with an equal one by the exporter) whose value differs from the next one's, past the first few."""
    from onnx import numpy_helper

    values = {i.name: float(numpy_helper.to_array(i).reshape(-1)[0]) for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    uses = [n.input[1] for n in qs]
    for i in range(3, len(qs) - 1):
        scale = qs[i].input[1]
        if uses.count(scale) == 1 and scale.endswith("_act_scale") and values[scale] != values[qs[i + 1].input[1]]:
            return i, scale[: -len("_act_scale")]
    raise AssertionError("no suitable activation quantize node")


def test_untampered_build_passes_tie_aware_parity(demo_build: BuildRun) -> None:
    code, out, err = run_cli(
        ["validate", str(demo_build.output), "--backend", "onnxruntime", "--int8-budget", "0.2", *FAST]
    )
    assert code == 0, out + err
    assert "tie-aware parity over" in out and "PASS" in out


@pytest.mark.parametrize("kind", ["weight_scale_x1.5", "wrong_axis", "missing_qdq_pair", "activation_scale_x2"])
def test_tampered_onnx_fails_validate_naming_the_layer(demo_build: BuildRun, tmp_path: Path, kind: str) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(demo_build.output, run_dir)
    path = _onnx_file(run_dir)
    model = onnx.load(str(path))
    if kind == "weight_scale_x1.5":
        named = _square_conv(model)
        tamper.tampered_copy(path, path, tamper.scale_weight, named)
    elif kind == "wrong_axis":
        named = _square_conv(model)
        tamper.tampered_copy(path, path, tamper.wrong_axis, named)
    else:
        index, named = _activation_q(model)
        fn = tamper.drop_qdq_pair if kind == "missing_qdq_pair" else tamper.scale_activation
        tamper.tampered_copy(path, path, fn, index)
    code, out, err = run_cli(["validate", str(run_dir), "--backend", "onnxruntime", "--int8-budget", "0.2", *FAST])
    assert code == 1, out + err
    failed = [line for line in out.splitlines() if "FAIL outputs:" in line]
    assert failed and named in failed[0], out
