"""One real ``fx2trt build`` of the bundled default, shared by the deploy tests (~30 s on 2 cores)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from fx2trt_pipeline import trt_api

if not trt_api.is_available():
    pytest.skip("no TensorRT library installed (pip install 'fx2trt-pipeline[rtx]')", allow_module_level=True)

#: Evaluation images of the shared build: enough for a real mAP, few enough for CI.
EVAL_IMAGES = 60


@dataclass
class BuildRun:
    """A finished CLI run: exit code, captured output and the output directory."""

    code: int
    stdout: str
    stderr: str
    output: Path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``fx2trt <argv>`` in this process; returns (exit code, stdout, stderr)."""
    from fx2trt_pipeline.deploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> BuildRun:
    """``fx2trt build --output <tmp>/demo --max-eval-images 60``: the default model, data and settings."""
    from fx2trt_pipeline.models import centernet

    if not Path(centernet.DEMO_WEIGHTS).is_file():
        pytest.skip(
            f"the demo detector weights {centernet.DEMO_WEIGHTS} are missing "
            "(python scripts/train_demo_detector.py writes them)"
        )
    output = tmp_path_factory.mktemp("build") / "demo"
    code, stdout, stderr = run_cli(["build", "--output", str(output), "--max-eval-images", str(EVAL_IMAGES)])
    return BuildRun(code, stdout, stderr, output)
