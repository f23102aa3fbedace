"""The one skip policy of GPU tests: skip only for a stated reason this machine cannot run the engine.

A GPU test that gets past :func:`engine_or_skip` has a GPU the engine targets, so any
``EngineLoadError`` from then on is a real failure (a deserialization bug must not read "skipped").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fx2trt_pipeline.engine.artifact import sidecar_path
from fx2trt_pipeline.engine.compatibility import gpu_unavailable_reason
from fx2trt_pipeline.engine.runtime import Engine, RuntimeOptions


def skip_unless_engines_run(metadata: dict | None = None) -> None:
    """Skip with the precise reason (no library, no CUDA device, GPU not targeted); else return."""
    reason = gpu_unavailable_reason(metadata)
    if reason:
        pytest.skip(f"cannot run TensorRT engines here: {reason}")


def engine_or_skip(path: Path, options: RuntimeOptions | None = None) -> Engine:
    """Load an engine, or skip with the stated reason it cannot run here; load errors fail the test."""
    skip_unless_engines_run(json.loads(sidecar_path(path).read_text()))
    return Engine.load(path, options=options)
