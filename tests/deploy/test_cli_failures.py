"""Failures print one line, exit non-zero and leave no partial output; user models via a config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fx2trt_pipeline.deploy import pipeline
from fx2trt_pipeline.errors import ConversionError

from .conftest import run_cli
from .photos import random_class_folders

ROOT = Path(__file__).resolve().parents[2]
TINY = "tests.deploy.models:tiny_classifier"


def _calib(tmp_path: Path, nan: bool = False) -> Path:
    data = np.random.default_rng(0).normal(size=(16, 3, 16, 16)).astype(np.float32)
    if nan:
        data[0, 0, 0, 0] = np.nan
    path = tmp_path / ("calib_nan.npy" if nan else "calib.npy")
    np.save(path, data)
    return path


def _tiny_args(tmp_path: Path, output: Path, *extra: str) -> list[str]:
    return [
        "build",
        "--model",
        TINY,
        "--calib-data",
        str(_calib(tmp_path)),
        "--no-onnx",
        "--output",
        str(output),
        *extra,
    ]


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".tmp-")]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_failed_step_prints_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """The real command line, in a fresh process: stderr holds exactly the one error line."""
    output = tmp_path / "out" / "tiny"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_engine.py"),
            "--model",
            TINY,
            "--calib-data",
            str(_calib(tmp_path, nan=True)),
            "--no-onnx",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fx2trt build: error: step 1/7 'capture' failed: CalibrationError: ")
    assert "NaN" in lines[0] and "[at " in lines[0] and "sampling.py" in lines[0]
    assert "[1/7] capture" in proc.stdout and "[2/7]" not in proc.stdout
    assert not output.parent.exists()  # not even the parent directory it created
    assert _leftovers(tmp_path) == []


def test_late_failure_keeps_the_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "tiny"
    code, stdout, stderr = run_cli(_tiny_args(tmp_path, output))
    assert code == 0, stderr
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert Path("model.plan") in before and Path("report.html") in before

    def explode(run: object) -> None:
        raise ConversionError("the validator exploded\nsecond line that must not be printed")

    monkeypatch.setattr(pipeline, "_step_validate", explode)
    code, stdout, stderr = run_cli(_tiny_args(tmp_path, output))
    assert code == 2
    lines = _error_lines(stderr)
    prefix = "fx2trt build: error: step 6/7 'validate' failed: ConversionError: the validator exploded"
    assert len(lines) == 1 and lines[0].startswith(prefix), stderr
    assert len(lines) == 1 and "second line" not in stderr
    after = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert after == before  # the previous run, untouched
    assert _leftovers(tmp_path) == []


def test_factory_error_names_the_step(tmp_path: Path) -> None:
    code, _, stderr = run_cli(
        [
            "build",
            "--model",
            "tests.deploy.models:broken_factory",
            "--calib-data",
            str(_calib(tmp_path)),
            "--output",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert _error_lines(stderr) == [ln for ln in _error_lines(stderr) if "weights server" in ln]
    assert "step 1/7 'capture' failed: RuntimeError: the model factory cannot reach its weights server" in stderr
    assert not (tmp_path / "x").exists()


def test_config_errors_exit_2_before_any_step(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[quant]\ncalibrater = "entropy"\n')
    code, stdout, stderr = run_cli(["build", "--config", str(bad), "--output", str(tmp_path / "o")])
    assert code == 2 and stdout == ""
    assert len(_error_lines(stderr)) == 1 and "calibrater" in stderr and "ConfigError" in stderr
    code, _, stderr = run_cli(["build", "--model", TINY, "--output", str(tmp_path / "o")])
    assert code == 2 and "no calibration data" in stderr
    code, _, stderr = run_cli(_tiny_args(tmp_path, tmp_path / "o", "--output-index", "0"))
    assert code == 2 and "--output-index applies to evaluation data" in stderr and "--eval-data" in stderr


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    output = tmp_path / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("precious")
    code, _, stderr = run_cli(_tiny_args(tmp_path, output))
    assert code == 2 and "--force" in stderr
    assert (output / "notes.txt").read_text() == "precious"
    code, _, stderr = run_cli(_tiny_args(tmp_path, output, "--force"))
    assert code == 0, stderr
    assert not (output / "notes.txt").exists() and (output / "fx2trt_run.json").is_file()


def _image_folder(root: Path) -> Path:
    return random_class_folders(root, np.random.default_rng(1))


def test_user_model_from_a_config_file(tmp_path: Path) -> None:
    """Relative paths in the file, [[inputs]] with a dynamic batch, [preprocess], top-1 on class folders."""
    _image_folder(tmp_path / "data" / "val")
    _image_folder(tmp_path / "data" / "calib")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("""
[model]
source = "tests.deploy.models:tiny_classifier"
kwargs = { num_classes = 3 }
name = "tiny cls"
output_names = ["logits"]

[[inputs]]
name = "pixels"
shape = [-1, 3, 16, 16]
min_shape = [1, 3, 16, 16]
opt_shape = [4, 3, 16, 16]
max_shape = [6, 3, 16, 16]

[preprocess]
size = [16, 16]
mean = [0.5]
std = [0.25]
channels = 3

[calibration]
source = "data/calib"
batch_size = 4

[evaluation]
source = "data/val"
batch_size = 5

[quant]
calibrator = "percentile"
percentile = 99.9

[gate]
int8_budget = 1.0
engine_tolerance = 1.0
""")
    output = tmp_path / "out"
    code, stdout, stderr = run_cli(["build", "--config", str(cfg), "--output", str(output), "--no-onnx"])
    assert code == 0, stderr
    manifest = json.loads((output / "fx2trt_run.json").read_text())
    ev = manifest["evaluation"]
    assert ev["task"] == "classification" and ev["metric"] == "top1" and ev["num_samples"] == 12
    assert manifest["passed"] and manifest["model"]["calibrator"] == "percentile"
    assert manifest["engine"]["inputs"][0]["name"] == "pixels"
    pbtxt = (output / "triton" / "tiny_cls" / "config.pbtxt").read_text()
    assert "max_batch_size: 6" in pbtxt and "dims: [ 3 ]" in pbtxt and "preferred_batch_size: [ 4, 6 ]" in pbtxt
    assert "INT8 TensorRT network" in (output / "report.html").read_text()


def test_calibrator_auto_keeps_the_best_of_every_calibrator(tmp_path: Path) -> None:
    _image_folder(tmp_path / "val")
    output = tmp_path / "auto"
    args = [
        "build",
        "--model",
        TINY,
        "--calib-data",
        str(_calib(tmp_path)),
        "--eval-data",
        str(tmp_path / "val"),
        "--calibrator",
        "auto",
        "--no-onnx",
        "--output",
        str(output),
    ]
    cfg = tmp_path / "pre.toml"
    cfg.write_text("[preprocess]\nsize = [16, 16]\nchannels = 3\n[gate]\nint8_budget = 1.0\nengine_tolerance = 1.0\n")
    code, stdout, stderr = run_cli([*args, "--config", str(cfg)])
    assert code == 0, stderr
    manifest = json.loads((output / "fx2trt_run.json").read_text())
    search = manifest["calibrator_search"]
    labels = [r["label"] for r in search["rows"]]
    assert labels[0] == "minmax" and "entropy" in labels and len(labels) == 6
    # fidelity to FP32 first, labels only break ties; chosen on 6 images, reported on the other 6
    assert search["order"] == ["agree_top1", "cosine_fp32", "top1"] and "chosen on 6 of 12" in search["note"]
    assert manifest["evaluation"]["num_samples"] == 6 and "odd-numbered" in manifest["evaluation"]["data_note"]
    best = next(r for r in search["rows"] if r["label"] == search["best"])
    assert manifest["model"]["calibrator"] == best["calibrator"]
    assert manifest["config"]["quant"]["calibrator"] == "auto"
    assert "(best of the search)" in stdout and "Calibrator search" in (output / "report.html").read_text()
    code, _, stderr = run_cli(
        [
            "build",
            "--model",
            TINY,
            "--calib-data",
            str(_calib(tmp_path)),
            "--calibrator",
            "auto",
            "--no-onnx",
            "--output",
            str(tmp_path / "none"),
        ]
    )
    assert code == 2 and "step" not in stderr and "--eval-data" in stderr


def test_failing_gate_exits_1_and_still_writes_the_artifacts(tmp_path: Path) -> None:
    output = tmp_path / "strict"
    cfg = tmp_path / "strict.toml"
    # one class folder per output (3); no top-1 reaches 1.01
    cfg.write_text(
        "[preprocess]\nsize = [16, 16]\nchannels = 3\n[gate]\nmin_metric = 1.01\nint8_budget = 1.0\n"
        "engine_tolerance = 1.0\n"
    )
    _image_folder(tmp_path / "val")
    code, stdout, stderr = run_cli(
        [*_tiny_args(tmp_path, output), "--eval-data", str(tmp_path / "val"), "--config", str(cfg)]
    )
    assert code == 1, stderr
    assert "accuracy gate FAILED (exit code 1): FAIL top1: network_executor" in stdout and "minimum 1.0100" in stdout
    assert "the artifacts were written anyway" in stdout
    manifest = json.loads((output / "fx2trt_run.json").read_text())
    assert manifest["passed"] is False and (output / "model.plan").is_file()


def test_sigterm_removes_the_staging_directory_and_stale_ones_go_next_run(tmp_path: Path) -> None:
    import signal
    import time

    stale = tmp_path / ".tmp-slow-999999999-abcd"  # a killed run's stage: its process is gone
    stale.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_engine.py"),
            "--model",
            "tests.deploy.models:slow_classifier",
            "--calib-data",
            str(_calib(tmp_path)),
            "--no-onnx",
            "--output",
            str(tmp_path / "slow"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".tmp-slow-") and p != stale
    ]:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted; nothing was written" in stderr, stderr
    assert _leftovers(tmp_path) == [] and not (tmp_path / "slow").exists()


def test_calibrator_auto_on_unlabelled_images_chooses_by_agreement_with_fp32(tmp_path: Path) -> None:
    from PIL import Image

    flat = tmp_path / "unlabelled"
    flat.mkdir()
    rng = np.random.default_rng(3)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)).save(flat / f"{i}.png")
    cfg = tmp_path / "pre.toml"
    cfg.write_text("[preprocess]\nsize = [16, 16]\nchannels = 3\n")
    code, stdout, stderr = run_cli(
        [
            *_tiny_args(tmp_path, tmp_path / "auto"),
            "--eval-data",
            str(flat),
            "--calibrator",
            "auto",
            "--config",
            str(cfg),
        ]
    )
    assert code in (0, 1), stderr
    manifest = json.loads((tmp_path / "auto" / "fx2trt_run.json").read_text())
    search = manifest["calibrator_search"]
    assert search["metric"] == "agree_top1" and len(search["rows"]) == 6
    scores = [(r["metrics"]["agree_top1"], r["metrics"]["cosine_fp32"]) for r in search["rows"]]
    best = next(r for r in search["rows"] if r["label"] == search["best"])
    assert (best["metrics"]["agree_top1"], best["metrics"]["cosine_fp32"]) == max(scores)
    assert manifest["evaluation"]["metric"] is None
    assert "agree_top1" in stdout and "(best of the search)" in stdout


# -- each failure names the flag that fixes it, in one line ---------------------------------------------------------


def _one_line_error(stderr: str) -> str:
    lines = _error_lines(stderr)
    assert len(lines) == 1 and "\x1b" not in stderr, stderr
    return lines[0]


def _build(tmp_path: Path, *extra: str, model: str = TINY) -> tuple[int, str, str]:
    return run_cli(["build", "--model", model, "--no-onnx", "--output", str(tmp_path / "out"), *extra])


def _write_images(root: Path, mode: str, count: int = 4, size: tuple[int, int] = (20, 24)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(2)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 255, size=(*size, channels), dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(root / f"{mode}_{i}.png")
    return root


def test_images_without_preprocessing_name_the_flags(tmp_path: Path) -> None:
    code, _, stderr = _build(tmp_path, "--calib-data", str(_write_images(tmp_path / "calib", "RGB")))
    line = _one_line_error(stderr)
    assert code == 2 and "--input-size, --mean and --std" in line and "[preprocess]" in line, line
    assert not (tmp_path / "out").exists()


def test_greyscale_images_for_a_colour_model_name_channels_3(tmp_path: Path) -> None:
    grey = _write_images(tmp_path / "grey", "L")
    preprocess = ["--input-size", "16", "--mean", "0.5", "--std", "0.25"]
    code, _, stderr = _build(tmp_path, "--calib-data", str(grey), *preprocess)
    line = _one_line_error(stderr)
    assert code == 2 and "4 image(s), e.g. " in line and "are greyscale" in line, line
    assert "but the model's first convolution takes 3 channels; give --channels 3" in line, line


def test_a_wrong_input_size_names_input_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model made for 16x16 inputs (a Linear after flatten) on 20x20 crops; its module sits in the cwd."""
    (tmp_path / "fixed_size_net.py").write_text(
        "import torch\n\n"
        "def model():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(4 * 16 * 16, 3)).eval()\n"
    )
    monkeypatch.chdir(tmp_path)
    calib = str(_write_images(tmp_path / "calib", "RGB"))
    preprocess = ["--mean", "0.5", "--std", "0.25", "--channels", "3"]
    code, _, stderr = _build(
        tmp_path, "--calib-data", calib, "--input-size", "20", *preprocess, model="fixed_size_net:model"
    )
    line = _one_line_error(stderr)
    assert code == 2 and "shaped (1, 3, 20, 20) (input size 20x20; torch: mat1 and mat2 shapes" in line, line
    assert line.endswith("give the input size the model was made for with --input-size") or "--input-size" in line
    code, _, stderr = _build(
        tmp_path, "--calib-data", calib, "--input-size", "16", *preprocess, model="fixed_size_net:model"
    )
    assert code == 0, stderr


def test_a_factory_module_in_the_current_directory_wins_as_with_python_m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A console script starts with its bin directory first on sys.path; ``python -m`` with the cwd first."""
    from fx2trt_pipeline.deploy.sources import resolve_callable

    for folder, answer in (("elsewhere", "installed"), ("project", "current directory")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "cwd_first_factory.py").write_text(f"def which():\n    return {answer!r}\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "bin"), str(tmp_path / "elsewhere"), *sys.path])
    monkeypatch.delitem(sys.modules, "cwd_first_factory", raising=False)
    monkeypatch.chdir(tmp_path / "project")
    try:
        assert resolve_callable("cwd_first_factory:which", "Model factory")() == "current directory"
    finally:
        sys.modules.pop("cwd_first_factory", None)
    from fx2trt_pipeline.deploy.cli import main

    with pytest.raises(SystemExit):
        main(["build", "--help"])
    helptext = capsys.readouterr().out
    assert "current directory first, as with python -m" in " ".join(helptext.split())


def test_weights_of_another_shape_print_one_whole_line(tmp_path: Path) -> None:
    import torch

    from tests.deploy.models import tiny_classifier

    weights = tmp_path / "five_classes.pth"
    torch.save(tiny_classifier(num_classes=5).state_dict(), weights)
    code, _, stderr = _build(tmp_path, "--weights", str(weights), "--calib-data", str(_calib(tmp_path)))
    line = _one_line_error(stderr)
    assert code == 2 and f"Weights {weights} do not fit {TINY}: 2 tensor(s) differ in shape" in line, line
    assert "the first fc.weight: (5, 8) in the file, (3, 8) in the model" in line
    assert "kwargs = { num_classes = N }" in line


def test_a_pickled_whole_model_names_the_class_without_terminal_codes(tmp_path: Path) -> None:
    import torch

    from tests.deploy.models import tiny_classifier

    weights = tmp_path / "whole.pth"
    torch.save(tiny_classifier(), weights)
    code, _, stderr = _build(tmp_path, "--weights", str(weights), "--calib-data", str(_calib(tmp_path)))
    line = _one_line_error(stderr)
    assert code == 2 and "holds a pickled tests.deploy.models.TinyClassifier object" in line, line
    assert "torch.save(model.state_dict(), 'weights.pth')" in line and "--weights" in line
