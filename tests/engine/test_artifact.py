"""Load checks before deserialization: missing, truncated, corrupt, foreign, wrong-version engines."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import (
    EngineArtifact,
    check_engine_header,
    hash_quant_state,
    load_engine_bytes,
    parse_rtx_header,
    sidecar_path,
)
from fx2trt_pipeline.errors import EngineLoadError

RTX = trt_api.library_name() == "tensorrt_rtx"
needs_rtx = pytest.mark.skipif(not RTX, reason="engine header layout measured for TensorRT-RTX only")


def _rewrite_sidecar(engine: Path, **changes: object) -> None:
    meta_path = sidecar_path(engine)
    meta = json.loads(meta_path.read_text())
    for dotted, value in changes.items():
        node = meta
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    meta_path.write_text(json.dumps(meta))


def test_valid_engine_loads(built_engine: Path) -> None:
    data, meta = load_engine_bytes(built_engine)
    assert len(data) == meta["engine"]["size_bytes"]
    art = EngineArtifact.open(built_engine)
    assert art.output_names == ["y"] and art.input_specs[0].shape == (1, 3, 12, 12)


def test_missing_engine_file(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match=f"Engine file {tmp_path / 'nope.plan'} does not exist"):
        load_engine_bytes(tmp_path / "nope.plan")


def test_missing_sidecar(built_engine: Path) -> None:
    sidecar_path(built_engine).unlink()
    with pytest.raises(EngineLoadError, match=f"Engine {built_engine} has no metadata sidecar conv.plan.json"):
        load_engine_bytes(built_engine)


def test_unparsable_sidecar(built_engine: Path) -> None:
    text = sidecar_path(built_engine).read_text()
    sidecar_path(built_engine).write_text(text[: len(text) // 2])
    with pytest.raises(EngineLoadError, match=f"sidecar {sidecar_path(built_engine)} is unreadable or not JSON"):
        load_engine_bytes(built_engine)


def test_newer_sidecar_format_is_refused(built_engine: Path) -> None:
    _rewrite_sidecar(built_engine, format_version=99)
    with pytest.raises(EngineLoadError, match="format_version 99"):
        load_engine_bytes(built_engine)


def test_truncated_engine(built_engine: Path) -> None:
    data = built_engine.read_bytes()
    built_engine.write_bytes(data[: len(data) - 1000])
    with pytest.raises(
        EngineLoadError,
        match=rf"{built_engine} has {len(data) - 1000} bytes but its sidecar "
        rf"records {len(data)}: the file is truncated.*Rebuild",
    ):
        load_engine_bytes(built_engine)


def test_flipped_byte(built_engine: Path) -> None:
    data = bytearray(built_engine.read_bytes())
    data[len(data) // 2] ^= 0x01
    built_engine.write_bytes(bytes(data))
    with pytest.raises(EngineLoadError, match=f"Engine file {built_engine} is corrupt: its sha256 is"):
        load_engine_bytes(built_engine)


def test_other_library_version_in_sidecar(built_engine: Path) -> None:
    _rewrite_sidecar(built_engine, library__version="1.6.0.40")
    name, version = trt_api.library_name(), trt_api.library_version()
    with pytest.raises(
        EngineLoadError,
        match=rf"{built_engine} was built with {name} 1\.6\.0\.40 but {name} "
        rf"{version} is installed",
    ):
        load_engine_bytes(built_engine)


def test_other_library_name_in_sidecar(built_engine: Path) -> None:
    _rewrite_sidecar(built_engine, library__name="tensorrt")
    with pytest.raises(EngineLoadError, match="was built with tensorrt "):
        load_engine_bytes(built_engine)
    _rewrite_sidecar(built_engine, library__name="TensorRT")
    with pytest.raises(EngineLoadError, match="its sidecar names the library 'TensorRT', not one of"):
        load_engine_bytes(built_engine)


@needs_rtx
def test_header_fields_of_a_real_engine(built_engine: Path) -> None:
    data = built_engine.read_bytes()
    assert data[:4] == b"vtrt" and data[28:32] == b"vtrt"
    header = parse_rtx_header(data)
    assert header is not None
    assert header.plan_size == len(data)
    assert header.version == ".".join(trt_api.library_version().split(".")[:4])
    assert header.compute_capability_mask == 0x7E


@needs_rtx
def test_header_version_mismatch_is_caught_even_with_a_consistent_sidecar(built_engine: Path) -> None:
    # A sidecar can be regenerated or copied; the header is what TensorRT itself will check.
    data = bytearray(built_engine.read_bytes())
    data[25] += 1  # minor version
    with pytest.raises(EngineLoadError, match=r"built by TensorRT-RTX 1\.8\.1\.116 \(engine header\)"):
        check_engine_header(bytes(data), "x.plan", "tensorrt_rtx", "1.7.1.116")


@needs_rtx
def test_header_catches_truncation_without_sidecar(built_engine: Path) -> None:
    data = built_engine.read_bytes()
    with pytest.raises(EngineLoadError, match=rf"x.plan is truncated or padded: its header says {len(data)} bytes"):
        check_engine_header(data[:-7], "x.plan")


@needs_rtx
def test_foreign_file_is_not_an_engine(built_engine: Path) -> None:
    with pytest.raises(EngineLoadError, match=r"x.onnx is not a TensorRT-RTX engine: its first bytes are"):
        check_engine_header(b"\x08\x07\x12\x07pytorch" + bytes(100), "x.onnx")
    assert parse_rtx_header(built_engine.read_bytes()[:63]) is None


@needs_rtx
def test_unknown_mask_bits_are_reported() -> None:
    header = bytearray(64)
    header[0:4] = header[28:32] = b"vtrt"
    struct.pack_into("<Q", header, 16, 64)
    header[24:28] = bytes([1, 7, 1, 116])
    struct.pack_into("<I", header, 32, 0x82)
    parsed = parse_rtx_header(bytes(header))
    assert parsed is not None and parsed.compute_capabilities == ["SM80", "unknown-bits-0x80"]


def test_hash_quant_state_is_canonical_and_sensitive() -> None:
    w = torch.arange(-8, 8, dtype=torch.int8).reshape(4, 4)
    state = {
        "conv_weight_int8": w,
        "conv_weight_scale": torch.tensor([0.1, 0.2, 0.3, 0.4]),
        "x_input_scale": torch.tensor(0.05),
        "config": {"axis": 0, "method": "entropy", "pct": 99.99},
    }
    h = hash_quant_state(state)
    assert h.startswith("sha256:") and len(h) == 7 + 64
    assert hash_quant_state(dict(reversed(list(state.items())))) == h  # key order does not matter
    assert hash_quant_state({**state, "conv_weight_int8": w.clone()}) == h  # values, not identity
    assert hash_quant_state({**state, "x_input_scale": torch.tensor(0.0500001)}) != h
    assert hash_quant_state({**state, "conv_weight_int8": w.to(torch.int32)}) != h  # dtype matters
    assert hash_quant_state({**state, "conv_weight_int8": w.reshape(2, 8)}) != h  # shape matters
    assert hash_quant_state({**state, "arr": np.ones(3, np.float32)}) == hash_quant_state(
        {**state, "arr": torch.ones(3)}
    )
    with pytest.raises(TypeError, match="cannot hash a object"):
        hash_quant_state({"x": object()})
