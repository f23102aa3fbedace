"""BuildOptions: normalisation, round trip, and how they land on a real IBuilderConfig."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.engine_builder import create_builder
from fx2trt_pipeline.engine.options import BuildOptions, apply_build_options, normalize_compute_capability
from fx2trt_pipeline.errors import ConfigError

RTX = trt_api.library_name() == "tensorrt_rtx"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("8.6", "SM86"),
        (8.9, "SM89"),
        (120, "SM120"),
        ("sm_75", "SM75"),
        ("SM121", "SM121"),
        ("current", "CURRENT"),
    ],
)
def test_normalize_compute_capability(value: object, expected: str) -> None:
    assert normalize_compute_capability(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["ampere", "8", "8.6.1", ""])
def test_bad_compute_capability_is_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="Compute capability"):
        normalize_compute_capability(bad)


def test_validation_errors() -> None:
    with pytest.raises(ConfigError, match="builder_optimization_level must be 0..5"):
        BuildOptions(builder_optimization_level=7)
    with pytest.raises(ConfigError, match="workspace_bytes"):
        BuildOptions(workspace_bytes=0)
    with pytest.raises(ConfigError, match="CURRENT"):
        BuildOptions(compute_capabilities=("CURRENT", "8.6"))
    with pytest.raises(ConfigError, match="profiling_verbosity"):
        BuildOptions(profiling_verbosity="LOUD")
    with pytest.raises(ConfigError, match="not both"):
        BuildOptions(compute_capabilities=("8.6",), hardware_compatibility_level="AMPERE_PLUS")


def test_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    opts = BuildOptions(
        workspace_bytes=1 << 28,
        builder_optimization_level=2,
        timing_cache_path=tmp_path / "t.cache",
        compute_capabilities=("8.6", "SM86", "sm89"),
        profiling_verbosity="detailed",
    )
    assert opts.compute_capabilities == ("SM86", "SM89")  # normalised and de-duplicated
    assert opts.profiling_verbosity == "DETAILED"
    data = opts.to_dict()
    assert data["timing_cache_path"] == str(tmp_path / "t.cache") and data["compute_capabilities"] == [
        "SM86",
        "SM89",
    ]
    assert BuildOptions.from_dict(data) == opts
    assert BuildOptions.from_dict(BuildOptions().to_dict()) == BuildOptions()
    with pytest.raises(ConfigError, match="workspace_size"):
        BuildOptions.from_dict({"workspace_size": 1})


def test_apply_sets_real_builder_config() -> None:
    trt = trt_api.get_trt()
    config = create_builder().create_builder_config()
    opts = BuildOptions(
        workspace_bytes=1 << 27,
        builder_optimization_level=1,
        profiling_verbosity="DETAILED",
        compute_capabilities=("8.6", "12.0") if RTX else (),
    )
    apply_build_options(opts, config, trt)
    assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 1 << 27
    assert config.builder_optimization_level == 1
    assert config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED
    if RTX:
        assert config.num_compute_capabilities == 2
        assert [config.get_compute_capability(i) for i in range(2)] == [
            trt.ComputeCapability.SM86,
            trt.ComputeCapability.SM120,
        ]


@pytest.mark.skipif(not RTX, reason="TensorRT-RTX behaviour")
def test_hardware_compatibility_refused_by_rtx() -> None:
    config = create_builder().create_builder_config()
    with pytest.raises(ConfigError, match="compute_capabilities=.*instead"):
        apply_build_options(BuildOptions(hardware_compatibility_level="AMPERE_PLUS"), config, trt_api.get_trt())


@pytest.mark.skipif(not RTX, reason="TensorRT-RTX behaviour")
def test_unknown_target_lists_available_ones() -> None:
    config = create_builder().create_builder_config()
    with pytest.raises(ConfigError, match=r"\['SM90'\] is not a target of tensorrt_rtx.*available: .*SM86"):
        apply_build_options(BuildOptions(compute_capabilities=("9.0",)), config, trt_api.get_trt())


def test_compute_capabilities_refused_without_the_api() -> None:
    # Datacenter TensorRT has no ComputeCapability enum / set_compute_capability: feature-checked.
    fake_trt = SimpleNamespace(__version__="10.13")
    fake_config = SimpleNamespace()
    with pytest.raises(ConfigError, match="needs TensorRT-RTX.*hardware_compatibility_level='AMPERE_PLUS'"):
        apply_build_options(BuildOptions(compute_capabilities=("8.6",)), fake_config, fake_trt)
