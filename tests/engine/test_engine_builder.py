"""Real INT8 engine builds on CPU (TensorRT-RTX): profiles, options, timing cache, failures, atomic saves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fx2trt_pipeline import atomic_io as atomic
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine import engine_builder, engine_files
from fx2trt_pipeline.engine.artifact import load_engine_bytes, parse_rtx_header, sidecar_path
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_bytes_from_network
from fx2trt_pipeline.engine.engine_files import network_io_metadata, save_engine
from fx2trt_pipeline.engine.options import BuildOptions
from fx2trt_pipeline.errors import EngineBuildError
from fx2trt_pipeline.network.inputs import InputSpec

RTX = trt_api.library_name() == "tensorrt_rtx"
needs_rtx = pytest.mark.skipif(not RTX, reason="engine header layout measured for TensorRT-RTX only")


def test_static_qdq_conv_builds_and_saves(
    tmp_path: Path, qdq_network: Callable[..., Any], static_spec: InputSpec
) -> None:
    builder, net, _keep = qdq_network(1)
    data = engine_bytes_from_network(builder, net, [static_spec])
    art = save_engine(data, tmp_path / "out" / "conv.plan", network_io_metadata(net, [static_spec]))
    assert art.engine_path.read_bytes() == data and art.size_bytes == len(data)
    assert art.metadata_path == tmp_path / "out" / "conv.plan.json"
    meta = json.loads(art.metadata_path.read_text())
    assert meta["library"] == {"name": trt_api.library_name(), "version": trt_api.library_version()}
    assert meta["engine"]["size_bytes"] == len(data) and meta["engine"]["sha256"] == art.sha256
    assert meta["inputs"] == [static_spec.to_dict()]
    assert meta["outputs"] == [{"name": "y", "dtype": "float32", "shape": [1, 8, 12, 12]}]
    assert meta["num_layers"] == net.num_layers == 8
    assert meta["format_version"] == 1 and meta["created"].endswith("+00:00")
    if RTX:  # default TensorRT-RTX targets: Ampere and later
        assert meta["target_compute_capabilities"] == ["SM80", "SM86", "SM89", "SM120", "SM121", "later"]
    assert load_engine_bytes(art.engine_path)[0] == data


def test_dynamic_batch_profile_round_trips(
    tmp_path: Path, qdq_network: Callable[..., Any], dynamic_spec: InputSpec
) -> None:
    builder, net, _keep = qdq_network(None)
    data = engine_bytes_from_network(builder, net, [dynamic_spec])
    art = save_engine(data, tmp_path / "dyn.plan", network_io_metadata(net, [dynamic_spec]))
    _, meta = load_engine_bytes(art.engine_path)
    assert [InputSpec.from_dict(d) for d in meta["inputs"]] == [dynamic_spec]
    assert art.input_specs[0].max_shape == (8, 3, 12, 12)
    assert meta["outputs"][0]["shape"] == [-1, 8, 12, 12]


def test_dynamic_input_without_spec_is_refused(qdq_network: Callable[..., Any], static_spec: InputSpec) -> None:
    builder, net, _keep = qdq_network(None)
    with pytest.raises(EngineBuildError, match=r"'x'.*dynamic but the InputSpec is static"):
        engine_bytes_from_network(builder, net, [static_spec])
    with pytest.raises(EngineBuildError, match=r"'x' has dynamic shape \(-1, 3, 12, 12\) but no InputSpec"):
        engine_bytes_from_network(builder, net, [])


def test_spec_mismatches_are_reported_together(qdq_network: Callable[..., Any]) -> None:
    builder, net, _keep = qdq_network(1)
    import torch

    specs = [InputSpec("x", (1, 3, 12, 13), torch.float16), InputSpec("images", (1, 3, 8, 8))]
    with pytest.raises(EngineBuildError) as info:
        engine_bytes_from_network(builder, net, specs)
    text = str(info.value)
    assert "network shape (1, 3, 12, 12) does not match InputSpec (1, 3, 12, 13)" in text
    assert "network dtype float32 but InputSpec dtype torch.float16" in text
    assert "InputSpec 'images' names no network input (network inputs: ['x'])" in text


def test_non_strongly_typed_network_is_refused(static_spec: InputSpec) -> None:
    trt = trt_api.get_trt()
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    for untyped in (SimpleNamespace(get_flag=lambda f: False, num_outputs=1), SimpleNamespace(flags=0, num_outputs=1)):
        with pytest.raises(EngineBuildError, match="not STRONGLY_TYPED.*no INT8/FP16 builder flags"):
            engine_bytes_from_network(create_builder(), untyped, [static_spec])
    # The same check passes once the flag is set (through get_flag or the flags bitmask): the next check speaks.
    real = create_builder().create_network(strongly_typed)
    assert real.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    for typed in (real, SimpleNamespace(flags=strongly_typed, num_outputs=0)):
        with pytest.raises(EngineBuildError, match="no outputs"):
            engine_bytes_from_network(create_builder(), typed, [static_spec])


def test_build_failure_carries_tensorrt_messages_and_writes_nothing(tmp_path: Path) -> None:
    trt = trt_api.get_trt()
    builder = create_builder()
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = net.add_input("x", trt.float32, (1, 4))
    bad = net.add_constant((3, 5), np.ones((3, 5), np.float32))
    add = net.add_elementwise(x, bad.get_output(0), trt.ElementWiseOperation.SUM)
    add.name = "bad_add"
    net.mark_output(add.get_output(0))
    with pytest.raises(EngineBuildError) as info:
        engine_bytes_from_network(builder, net, [InputSpec("x", (1, 4))])
    text = str(info.value)
    assert "could not build the network" in text and "bad_add" in text and "broadcast" in text
    assert "Thread context has not been set" not in text  # noise is filtered
    assert list(tmp_path.iterdir()) == []


def test_network_without_outputs_is_refused() -> None:
    trt = trt_api.get_trt()
    builder = create_builder()
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    net.add_input("x", trt.float32, (1, 4))
    with pytest.raises(EngineBuildError, match="no outputs"):
        engine_bytes_from_network(builder, net, [])


def test_timing_cache_created_and_reused(
    tmp_path: Path, qdq_network: Callable[..., Any], static_spec: InputSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "caches" / "timing.cache"
    opts = BuildOptions(timing_cache_path=cache)
    builder, net, _keep = qdq_network(1)
    engine_bytes_from_network(builder, net, [static_spec], opts)
    first = cache.read_bytes()
    assert first[:4] == b"ptrt"  # TensorRT's serialized timing cache
    loaded: list[bytes] = []
    real = engine_builder.load_timing_cache

    def spy(config: Any, path: Path) -> None:
        loaded.append(path.read_bytes())
        real(config, path)

    monkeypatch.setattr(engine_builder, "load_timing_cache", spy)
    builder, net, _keep = qdq_network(1)
    engine_bytes_from_network(builder, net, [static_spec], opts)
    assert loaded == [first] and cache.read_bytes()[:4] == b"ptrt"
    assert [p.name for p in cache.parent.iterdir()] == ["timing.cache"]  # no temp files left


def test_corrupt_timing_cache_is_replaced(
    tmp_path: Path, qdq_network: Callable[..., Any], static_spec: InputSpec
) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"garbage" * 10)
    builder, net, _keep = qdq_network(1)
    engine_bytes_from_network(builder, net, [static_spec], BuildOptions(timing_cache_path=cache))
    assert cache.read_bytes()[:4] == b"ptrt"


@needs_rtx
@pytest.mark.parametrize(
    "targets, mask, names",
    [
        (("8.6",), 0x04, ["SM86"]),
        (("7.5", "8.9"), 0x09, ["SM75", "SM89"]),
        (("12.0", "12.1"), 0x30, ["SM120", "SM121"]),
    ],
)
def test_compute_capabilities_land_in_header_and_metadata(
    tmp_path: Path,
    qdq_network: Callable[..., Any],
    static_spec: InputSpec,
    targets: tuple[str, ...],
    mask: int,
    names: list[str],
) -> None:
    builder, net, _keep = qdq_network(1)
    opts = BuildOptions(compute_capabilities=targets, builder_optimization_level=0, workspace_bytes=1 << 26)
    data = engine_bytes_from_network(builder, net, [static_spec], opts)
    header = parse_rtx_header(data)
    assert header is not None and header.compute_capability_mask == mask
    art = save_engine(data, tmp_path / "cc.plan", {"build_options": opts.to_dict()})
    assert art.metadata["target_compute_capabilities"] == names
    assert art.metadata["build_options"]["compute_capabilities"] == [n for n in names]


@needs_rtx
def test_save_engine_refuses_bytes_that_are_not_an_engine(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="not a TensorRT-RTX engine"):
        save_engine(b"\x08\x01onnx model bytes" * 8, tmp_path / "m.plan")
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_save_leaves_previous_artifact_intact(
    tmp_path: Path,
    built_engine: Path,
    qdq_network: Callable[..., Any],
    static_spec: InputSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_engine, old_meta = built_engine.read_bytes(), sidecar_path(built_engine).read_text()
    builder, net, _keep = qdq_network(1, seed=1)
    new = engine_bytes_from_network(builder, net, [static_spec])
    assert new != old_engine

    real_open = atomic.atomic_open
    calls = {"n": 0}

    class Dying:
        """Writes half of what it is given, then the disk 'fails'."""

        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            raise OSError("No space left on device")

    from contextlib import contextmanager

    @contextmanager
    def dying_open(path: Any, mode: int = 0o644) -> Any:
        calls["n"] += 1
        with real_open(path, mode) as handle:
            yield Dying(handle) if calls["n"] == 2 else handle  # the sidecar write dies

    monkeypatch.setattr(engine_files, "atomic_open", dying_open)
    with pytest.raises(EngineBuildError, match=f"Could not write engine {built_engine}.*No space left"):
        save_engine(new, built_engine, network_io_metadata(net, [static_spec]))
    assert built_engine.read_bytes() == old_engine  # the engine was fully written, yet not installed
    assert sidecar_path(built_engine).read_text() == old_meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.plan", "conv.plan.json"]
    load_engine_bytes(built_engine)


def test_failed_build_does_not_touch_existing_artifact(
    tmp_path: Path, built_engine: Path, qdq_network: Callable[..., Any], static_spec: InputSpec
) -> None:
    before = built_engine.read_bytes()
    builder, net, _keep = qdq_network(None)
    with pytest.raises(EngineBuildError):
        engine_bytes_from_network(builder, net, [static_spec])
    assert built_engine.read_bytes() == before
