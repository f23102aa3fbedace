"""The one skip policy of GPU tests: skip only for a stated reason this machine cannot run the engine.

A GPU test that gets past :func:`engine_or_skip` has a GPU the engine targets, so any
``EngineLoadError`` from then on is a real failure (a deserialization bug must not read "skipped").
With ``FX2TRT_REQUIRE_GPU=1`` even those skips fail (tests/gpu_policy.py). Every engine a GPU test
loads is checked to run on the library that was meant to run it (:func:`expected_library`), so a
machine with both libraries cannot pass the TensorRT-RTX tests with datacenter TensorRT.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import sidecar_path
from fx2trt_pipeline.engine.compatibility import gpu_unavailable_reason
from fx2trt_pipeline.engine.runtime import Engine, RuntimeOptions


def skip_unless_engines_run(metadata: dict | None = None) -> None:
    """Skip with the precise reason (no library, no CUDA device, GPU not targeted); else return."""
    reason = gpu_unavailable_reason(metadata)
    if reason:
        pytest.skip(f"cannot run TensorRT engines here: {reason}")


def expected_library() -> str:
    """The library GPU tests must run: ``FX2TRT_TRT_LIBRARY`` when set, else the build library."""
    return trt_api.library_name()


def assert_ran_on_expected_library(engine: Engine) -> None:
    """Fail unless ``engine`` runs on :func:`expected_library` (and on the library its sidecar names)."""
    named = (engine.metadata.get("library") or {}).get("name")
    assert engine.library == named == expected_library(), (
        f"the engine ran on {engine.library} (sidecar: {named}), expected {expected_library()} "
        f"({trt_api.build_library_reason()})"
    )


def engine_or_skip(path: Path, options: RuntimeOptions | None = None) -> Engine:
    """Load an engine, or skip with the stated reason it cannot run here; load errors fail the test."""
    skip_unless_engines_run(json.loads(sidecar_path(path).read_text()))
    engine = Engine.load(path, options=options)
    assert_ran_on_expected_library(engine)
    return engine
