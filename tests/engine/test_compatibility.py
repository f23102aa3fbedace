"""Which GPUs an engine runs on: the sidecar's compatibility fields, the load-time check, the sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import sidecar_path
from fx2trt_pipeline.engine.compatibility import (
    GpuInfo,
    compatibility_fields,
    deployment_target,
    incompatibility_reason,
)
from fx2trt_pipeline.errors import ExitCode

H200 = GpuInfo("NVIDIA H200", 9, 0)
RTX_4090 = GpuInfo("NVIDIA GeForce RTX 4090", 8, 9)
RTX_5090 = GpuInfo("NVIDIA GeForce RTX 5090", 12, 0)
T4 = GpuInfo("Tesla T4", 7, 5)
A10 = GpuInfo("NVIDIA A10", 8, 6)
A100 = GpuInfo("NVIDIA A100-SXM4-80GB", 8, 0)
FUTURE = GpuInfo("a GPU after Blackwell", 13, 0)


def _meta(library: str, targets: list[str] | None, level: str | None, built_on: GpuInfo | None) -> dict:
    version = "1.7.1.116" if library == "tensorrt_rtx" else "10.13.0.35"
    return {"compatibility": compatibility_fields(library, version, targets, level, built_on)}


def test_sidecar_records_library_level_building_gpu_and_targets(built_engine: Path) -> None:
    meta = json.loads(sidecar_path(built_engine).read_text())
    fields = meta["compatibility"]
    assert fields["library"] == trt_api.library_name()
    assert fields["library_version"] == trt_api.library_version() == meta["library"]["version"]
    assert fields["hardware_compatibility_level"] == "NONE"
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        assert fields["built_on"] == {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
    else:
        assert fields["built_on"] is None  # TensorRT-RTX builds without a GPU; nothing to record
    if trt_api.library_name() == "tensorrt_rtx":
        # the engine header's target mask, decoded: a default build
        assert fields["runs_on"] == meta["target_compute_capabilities"]
        assert fields["runs_on"] == ["SM80", "SM86", "SM89", "SM120", "SM121", "later"]


@pytest.mark.parametrize(
    "gpu, runs",
    [(RTX_4090, True), (A100, True), (A10, True), (RTX_5090, True), (FUTURE, True), (H200, False), (T4, False)],
)
def test_default_tensorrt_rtx_engine_targets(gpu: GpuInfo, runs: bool) -> None:
    meta = _meta("tensorrt_rtx", ["SM80", "SM86", "SM89", "SM120", "SM121", "later"], None, None)
    assert (incompatibility_reason(meta, gpu) is None) == runs


def test_tensorrt_rtx_never_runs_on_hopper_and_explains_it() -> None:
    meta = _meta("tensorrt_rtx", ["SM80", "later"], None, None)  # even "later" does not cover 9.0
    reason = incompatibility_reason(meta, H200)
    assert reason == (
        "NVIDIA H200 (compute capability 9.0, Hopper) is not a target of this TensorRT-RTX engine; it runs on "
        "8.0 and later; TensorRT-RTX does not run on Hopper (9.0) at all"
    )
    turing_only = _meta("tensorrt_rtx", ["SM75"], None, None)
    assert incompatibility_reason(turing_only, T4) is None
    assert "it runs on 7.5" in str(incompatibility_reason(turing_only, RTX_4090))


def test_datacenter_plans_run_on_their_build_compute_capability_unless_hardware_compatible() -> None:
    plain = _meta("tensorrt", None, None, A10)
    assert plain["compatibility"]["runs_on"] == ["SM86"]
    assert incompatibility_reason(plain, GpuInfo("NVIDIA RTX A6000", 8, 6)) is None
    assert incompatibility_reason(plain, A100) == (
        "NVIDIA A100-SXM4-80GB (compute capability 8.0, Ampere) is not a target of this TensorRT engine; it runs "
        "on 8.6 (built on NVIDIA A10 with hardware compatibility NONE)"
    )
    portable = _meta("tensorrt", None, "AMPERE_PLUS", A10)
    assert [incompatibility_reason(portable, g) is None for g in (A100, H200, RTX_5090, T4)] == [
        True,
        True,
        True,
        False,
    ]
    unknown = _meta("tensorrt", None, None, None)  # built where no GPU was recorded: TensorRT decides
    assert incompatibility_reason(unknown, T4) is None


def test_sidecars_without_the_section_still_answer() -> None:
    old = {"library": {"name": "tensorrt_rtx", "version": "1.7.1.116"}, "target_compute_capabilities": None}
    assert incompatibility_reason(old, H200) is not None and incompatibility_reason(old, RTX_4090) is None
    assert deployment_target(old).startswith("TensorRT-RTX 1.7.1.116 engine for compute capability 8.0, 8.6, 8.9")


def test_deployment_target_sentences() -> None:
    rtx = _meta("tensorrt_rtx", ["SM80", "SM86", "SM89", "SM120", "SM121", "later"], None, None)
    assert deployment_target(rtx) == (
        "TensorRT-RTX 1.7.1.116 engine for compute capability 8.0, 8.6, 8.9, 12.0, 12.1 and later (Ampere, Ada, "
        "Blackwell; not Hopper H100/H200); served by TensorRT-RTX 1.7.1.116 (fx2trt_pipeline.Engine or an "
        "application linked against it), not by datacenter TensorRT nor Triton's standard tensorrt_plan backend."
    )
    assert deployment_target(_meta("tensorrt", None, None, A10)) == (
        "TensorRT 10.13.0.35 engine for compute capability 8.6 only (hardware compatibility NONE, built on "
        "NVIDIA A10); served by TensorRT 10.13.0.35 exactly, e.g. Triton's tensorrt_plan backend built against "
        "that version."
    )
    assert "compute capability 8.0 and later (hardware compatibility AMPERE_PLUS" in deployment_target(
        _meta("tensorrt", None, "AMPERE_PLUS", A10)
    )


def test_validator_reports_an_unsupported_gpu_as_backend_unavailable(
    built_engine: Path, monkeypatch: pytest.MonkeyPatch, fake_cuda: dict
) -> None:
    from tests.deploy.conftest import run_cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(GpuInfo, "of", classmethod(lambda cls, device=None: H200))
    argv = ["validate", "--engine", str(built_engine), "--data", "mnist_det:val", "--min-metric", "0.1"]
    code, _, err = run_cli(argv)
    assert code == ExitCode.BACKEND_UNAVAILABLE, err
    assert "NVIDIA H200 (compute capability 9.0, Hopper) is not a target" in err and "EngineLoadError" not in err
