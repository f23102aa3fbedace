"""What a build did without being asked is said on the console: alpha dropped, greyscale repeated, equalization that
equalized nothing, evaluation on the calibration images; TensorRT's messages go to tensorrt.log, its warnings once."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from fx2trt_pipeline.deploy.trt_log import TENSORRT_LOGGER, tensorrt_log

from .conftest import run_cli

TINY = "tests.deploy.models:tiny_classifier"


def _images(root: Path) -> Path:
    """Two RGBA and two greyscale PNGs (random pixels, alpha varying)."""
    from PIL import Image

    rng = np.random.default_rng(4)
    root.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (20, 24, 4), dtype=np.uint8), "RGBA").save(root / f"rgba_{i}.png")
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8), "L").save(root / f"grey_{i}.png")
    return root


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("notes")
    argv = ["build", "--model", TINY, "--calib-data", str(_images(root / "calib")), "--input-size", "16"]
    argv += ["--mean", "0.5", "--std", "0.25", "--channels", "3", "--equalization", "activations", "--no-onnx"]
    code, stdout, stderr = run_cli([*argv, "--output", str(root / "out")])
    assert code == 0, stderr
    return root / "out", stdout, stderr


def test_alpha_and_greyscale_are_said_once(build: tuple[Path, str, str]) -> None:
    _, stdout, _ = build
    alpha = [ln for ln in stdout.splitlines() if "alpha channel" in ln]
    assert len(alpha) == 1 and "calibration data: 2 image(s), e.g. " in alpha[0] and "rgba_0.png" in alpha[0]
    assert "it is dropped, not composited (as torchvision.io.decode_image(mode=RGB)" in alpha[0]
    grey = [ln for ln in stdout.splitlines() if "greyscale" in ln]
    assert len(grey) == 1 and "repeated into 3 channels (--channels 3)" in grey[0]
    assert "preprocessing: resize to 16x16, bilinear antialiased, mean [0.5], std [0.25], 3 channels" in stdout
    assert "--input-size 16; --mean 0.5; --std 0.25; --channels 3" in stdout


def test_equalization_that_found_no_pair_says_so(build: tuple[Path, str, str]) -> None:
    out, stdout, _ = build
    line = "equalization (activations) equalized 0 pairs: no conv/linear -> ReLU, ReLU6 or identity -> depthwise conv"
    assert line in stdout and "the model is quantized as if without --equalization" in stdout
    notes = [n for step in json.loads((out / "fx2trt_run.json").read_text())["steps"] for n in step["notes"]]
    assert any(n.startswith(line) for n in notes)


def test_no_eval_data_is_said_on_the_console_and_in_the_report(build: tuple[Path, str, str]) -> None:
    out, stdout, _ = build
    assert "no --eval-data: INT8 is compared with FP32 on calibration images" in stdout
    assert json.loads((out / "fx2trt_run.json").read_text())["eval_on_calibration"] is True
    html = (out / "report.html").read_text()
    assert "These are calibration images (no --eval-data): the scales were fitted to them" in html


def test_tensorrt_messages_are_in_tensorrt_log(build: tuple[Path, str, str]) -> None:
    out, stdout, stderr = build
    lines = (out / "tensorrt.log").read_text().splitlines()
    severities = {ln.split("]")[0] + "]" for ln in lines}
    assert {"[VERBOSE]", "[INFO]"} <= severities and any(ln.startswith("[VERBOSE] Layers:") for ln in lines)
    messages = [ln for ln in lines if ln.startswith(("[VERBOSE] ", "[INFO] ", "[WARNING] ", "[ERROR] "))]
    assert f"tensorrt.log: {len(messages)} TensorRT messages (0 warnings, 0 errors)" in stdout  # some span lines
    assert stderr == ""  # no TensorRT line reached the console
    manifest = json.loads((out / "fx2trt_run.json").read_text())
    assert "tensorrt.log" in {a["path"] for a in manifest["artifacts"]}


def test_the_console_shows_each_warning_once_and_not_known_harmless_ones(tmp_path: Path) -> None:
    console = io.StringIO()
    logger = logging.getLogger(TENSORRT_LOGGER)
    with tensorrt_log(console) as log:
        for _ in range(102):
            logger.warning("%s", "[graphShapeAnalyzer] getSize works only for static size")
        for _ in range(3):
            logger.warning("%s", "Weights of layer conv1 are all zero")
        logger.error("%s", "Could not find any implementation for node conv2\ndetails on a second line")
        logger.debug("%s", "a VERBOSE message")
    assert console.getvalue().splitlines() == [
        "TensorRT WARNING: Weights of layer conv1 are all zero",
        "TensorRT ERROR: Could not find any implementation for node conv2 (more in tensorrt.log)",
    ]
    assert log.summary() == (
        "tensorrt.log: 107 TensorRT messages (105 warnings, 1 errors; 2 repeats not shown again, 102 known-harmless "
        "not shown ('getSize works only for static size'))"
    )
    log.write(tmp_path / "tensorrt.log")
    text = (tmp_path / "tensorrt.log").read_text()
    assert text.count("getSize works only for static size") == 102 and "[VERBOSE] a VERBOSE message" in text
    assert logger.level == logging.NOTSET and logger.propagate and not logger.handlers  # restored after the build
