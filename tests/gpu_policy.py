"""The GPU-test policy, as a pytest plugin: ``FX2TRT_REQUIRE_GPU=1`` turns every GPU-test skip into a failure.

GPU tests (``@pytest.mark.gpu``) skip with a stated reason where engines cannot run: no TensorRT library,
no CUDA device, a GPU or driver the engine's library does not support. That keeps CPU runs green, and it
would let a GPU job that lost its GPU (or ran on a Hopper card TensorRT-RTX refuses) go green too. A job
meant to run them sets ``FX2TRT_REQUIRE_GPU=1``: then each such skip fails with its reason.

    FX2TRT_REQUIRE_GPU=1 FX2TRT_TRT_LIBRARY=tensorrt_rtx python -m pytest -m gpu

The header of every run names the TensorRT library and GPU it found, so a log shows what ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

#: Environment variable that makes GPU tests unable to pass by skipping.
REQUIRE_GPU = "FX2TRT_REQUIRE_GPU"


def gpu_required() -> bool:
    """True when ``FX2TRT_REQUIRE_GPU`` is set to anything but empty, ``0``, ``false`` or ``no``."""
    return os.environ.get(REQUIRE_GPU, "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and gpu_required() and item.get_closest_marker("gpu") is not None):
        return
    if hasattr(report, "wasxfail"):  # an expected failure, not a skip
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{REQUIRE_GPU}=1, but this GPU test skipped: {reason}"


def pytest_report_header(config: pytest.Config) -> str:
    from fx2trt_pipeline import trt_api

    try:
        library = trt_api.library_label() if trt_api.is_available() else "none importable"
        library += f" ({trt_api.build_library_reason()}; installed: {trt_api.installed_libraries()})"
    except Exception as exc:  # a bad FX2TRT_TRT_LIBRARY: say so, the tests report it properly
        library = f"unresolved ({exc})"
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    return f"fx2trt: TensorRT library {library}; GPU {gpu}; {REQUIRE_GPU}={os.environ.get(REQUIRE_GPU, '')!r}"
