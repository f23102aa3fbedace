"""``fx2trt validate``: exit codes for CI (0 pass, 1 gate failed, 2 bad input, 3 backend unavailable)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

from .conftest import BuildRun, run_cli

FAST = ["--max-images", "20"]


def test_run_dir_passes_with_its_thresholds_loosened(demo_build: BuildRun, tmp_path: Path) -> None:
    report = tmp_path / "verdict.json"
    code, out, err = run_cli(
        [
            "validate",
            str(demo_build.output),
            "--backend",
            "network_executor",
            "--int8-budget",
            "0.2",
            "--json",
            str(report),
            *FAST,
        ]
    )
    assert code == 0, out + err
    assert "PASS engine built from quantization state model.quant.json" in out
    assert "PASS outputs: network_executor vs simulated cosine" in out
    verdict = json.loads(report.read_text())
    assert verdict["passed"] and verdict["engine_backend"] == "network_executor" and verdict["num_samples"] == 20


def test_impossible_threshold_fails_with_exit_1(demo_build: BuildRun) -> None:
    code, out, _ = run_cli(
        [
            "validate",
            str(demo_build.output),
            "--backend",
            "onnxruntime",
            "--int8-budget",
            "1",
            "--min-metric",
            "0.999",
            *FAST,
        ]
    )
    assert code == 1
    assert "FAIL mAP: onnxruntime" in out and "minimum 0.9990" in out


def test_engine_backend_unavailable_is_exit_3(demo_build: BuildRun) -> None:
    reason = gpu_unavailable_reason(json.loads((demo_build.output / "model.plan.json").read_text()))
    if reason is None:
        pytest.skip("this machine can run the engine")
    code, _, err = run_cli(["validate", str(demo_build.output), "--backend", "tensorrt", *FAST])
    assert code == 3
    assert err.count("\n") == 1 and "'tensorrt' was requested but cannot run here" in err


def test_corrupt_engine_is_exit_2(demo_build: BuildRun, tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(demo_build.output, copy)
    plan = copy / "model.plan"
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    plan.write_bytes(bytes(data))
    code, _, err = run_cli(["validate", str(copy), *FAST])
    assert code == 2 and "EngineLoadError" in err and err.count("\n") == 1


def test_bad_usage_is_exit_2(tmp_path: Path, demo_build: BuildRun) -> None:
    assert run_cli(["validate", str(tmp_path)])[0] == 2  # not a build output
    assert run_cli(["validate"])[0] == 2
    code, _, err = run_cli(
        [
            "validate",
            "--onnx",
            str(demo_build.output / "model.qdq.onnx"),
            "--data",
            "mnist_det:val",
            "--min-cosine",
            "0.99",
        ]
    )
    assert code == 2 and "build output directory" in err


DECODE = ["--decode", "fx2trt_pipeline.validate.demo_detector:centernet_decode"]


def test_standalone_onnx_against_a_minimum_metric(demo_build: BuildRun) -> None:
    onnx = str(demo_build.output / "model.qdq.onnx")
    code, out, err = run_cli(
        ["validate", "--onnx", onnx, "--data", "mnist_det:val", "--min-metric", "0.05", *DECODE, *FAST]
    )
    assert code == 0, out + err
    assert out.startswith("PASS mAP: onnxruntime")
    code, out, _ = run_cli(
        ["validate", "--onnx", onnx, "--data", "mnist_det:val", "--min-metric", "0.999", *DECODE, *FAST]
    )
    assert code == 1 and out.startswith("FAIL mAP")
