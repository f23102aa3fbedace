"""Which TensorRT library a build uses, and what counts as one (``fx2trt_pipeline.trt_api``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError, TensorRTUnavailableError


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """trt_api with nothing imported yet (restored afterwards)."""
    monkeypatch.setattr(trt_api, "_MODULES", {})
    monkeypatch.setattr(trt_api, "_ERRORS", {})
    monkeypatch.delenv(trt_api.ENV_VAR, raising=False)


def test_type_stubs_named_tensorrt_are_not_the_library(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `pip install tensorrt-stubs` leaves: a tensorrt/ folder with only .pyi files, importable as a
    # namespace package.
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("class Builder: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    assert "tensorrt" not in trt_api.installed_libraries()
    assert "has no Builder/Runtime: type stubs or a placeholder" in trt_api._ERRORS["tensorrt"]
    if trt_api.is_available("tensorrt_rtx"):
        assert trt_api.build_library() == "tensorrt_rtx"
    sys.modules.pop("tensorrt", None)  # the namespace package; monkeypatch restores a real one if there was


def test_the_environment_chooses_the_build_library(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    if not trt_api.is_available("tensorrt_rtx"):
        pytest.skip("needs TensorRT-RTX (pip install 'fx2trt-pipeline[rtx]')")
    monkeypatch.setenv(trt_api.ENV_VAR, "tensorrt_rtx")
    assert trt_api.library_name() == "tensorrt_rtx" and trt_api.get_trt() is trt_api.get_trt("tensorrt_rtx")
    assert trt_api.build_library_reason() == f"chosen by {trt_api.ENV_VAR}=tensorrt_rtx"
    monkeypatch.setenv(trt_api.ENV_VAR, "tensorrt")
    monkeypatch.setitem(trt_api._MODULES, "tensorrt", None)  # not installed, whatever this machine has
    assert not trt_api.is_available()
    with pytest.raises(TensorRTUnavailableError, match=rf"TensorRT \({trt_api.ENV_VAR}=tensorrt\) cannot be imported"):
        trt_api.get_trt()
    monkeypatch.setenv(trt_api.ENV_VAR, "tensorrt-rtx")
    with pytest.raises(ConfigError, match=rf"{trt_api.ENV_VAR}: unknown TensorRT library 'tensorrt-rtx'"):
        trt_api.get_trt()


def test_both_installed_prefers_datacenter_for_builds_and_says_so(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    datacenter = type("tensorrt", (), {"Builder": object, "Runtime": object, "__version__": "10.13.0.35"})
    rtx = type("tensorrt_rtx", (), {"Builder": object, "Runtime": object, "__version__": "1.7.1.116"})
    monkeypatch.setitem(trt_api._MODULES, "tensorrt", datacenter)
    monkeypatch.setitem(trt_api._MODULES, "tensorrt_rtx", rtx)
    assert trt_api.build_library() == "tensorrt" and trt_api.library_label() == "TensorRT 10.13.0.35"
    assert trt_api.get_trt("tensorrt_rtx") is rtx  # an engine's own library stays reachable
    assert f"unless {trt_api.ENV_VAR} chooses" in trt_api.build_library_reason()
