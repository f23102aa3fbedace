"""``fx2trt validate``: exit codes for CI (0 pass, 1 gate failed, 2 bad input, 3 backend unavailable)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

from .conftest import BuildRun, run_cli
from .photos import random_class_folders

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


DECODE = ["--decode", "fx2trt_pipeline.models.centernet:centernet_decode"]


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


def _tiny_onnx(tmp_path: Path) -> Path:
    """The tiny 3-class classifier of the deploy tests, quantized and exported as QDQ ONNX."""
    import torch

    import fx2trt_pipeline as ftp
    from tests.deploy.models import tiny_classifier

    model = tiny_classifier()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    path = tmp_path / "tiny.qdq.onnx"
    ftp.export_qdq_onnx(qgm, (x[:2],), path, input_names=["pixels"], output_names=["logits"], dynamic_batch=True)
    return path


def test_standalone_classifier_takes_preprocessing_flags_config_and_npz_key(tmp_path: Path) -> None:
    """Class folders of raw images: --input-size/--mean/--std (or --config's [preprocess]) prepare them; the
    same check on both gives the same top-1, which a direct ONNX Runtime run reproduces."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    onnx = _tiny_onnx(tmp_path)
    rng = np.random.default_rng(1)
    random_class_folders(tmp_path / "val", rng, size=(16, 16))
    base = ["validate", "--onnx", str(onnx), "--data", str(tmp_path / "val"), "--min-metric", "0.0"]
    code, out, err = run_cli([*base, "--input-size", "16", "--mean", "0.5", "--std", "0.25"])
    assert code == 0, err
    files = sorted((tmp_path / "val").rglob("*.png"))
    x = np.stack([(np.asarray(Image.open(f), np.float32) / 255.0 - 0.5) / 0.25 for f in files]).transpose(0, 3, 1, 2)
    logits = ort.InferenceSession(str(onnx)).run(None, {"pixels": x})[0]
    top1 = float((logits.argmax(1) == np.repeat(np.arange(3), 4)).mean())
    assert f"PASS top1: onnxruntime {top1:.4f} >= minimum 0.0000 on 12 images" in out
    config = tmp_path / "data.toml"
    config.write_text("[preprocess]\nsize = [16, 16]\nmean = [0.5]\nstd = [0.25]\nchannels = 3\n")
    code, out2, err = run_cli([*base, "--config", str(config)])
    assert code == 0 and out2.splitlines()[-1] == out.splitlines()[-1], err
    np.savez(tmp_path / "inputs.npz", pixels=x, other=x[:1])
    npz = ["validate", "--onnx", str(onnx), "--data", str(tmp_path / "inputs.npz"), "--min-metric", "0.5"]
    code, _, err = run_cli(npz)
    assert code == 2 and "holds arrays ['pixels', 'other']" in err
    code, _, err = run_cli([*npz, "--npz-key", "pixels"])  # loads: network inputs without labels have no metric
    assert code == 2 and "a metric needs labels" in err
    code, _, err = run_cli(["validate", str(tmp_path), "--input-size", "16"])
    assert code == 2 and "--input-size" in err
