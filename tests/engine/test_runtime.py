"""Engine runtime: input checks (CPU) and real execution on a GPU that the library supports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest
import torch

from fx2trt_pipeline.engine.artifact import sidecar_path
from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network, network_io_metadata, save_engine
from fx2trt_pipeline.engine.runtime import (
    Engine,
    EngineInputError,
    TensorBinding,
    check_input,
    gpu_unavailable_reason,
)
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.errors import EngineLoadError


def _engine_or_skip(path: Path) -> Engine:
    """Load an engine, or skip with the precise reason this process cannot run it."""
    meta = json.loads(sidecar_path(path).read_text())
    reason = gpu_unavailable_reason(meta)
    if reason:
        pytest.skip(f"cannot run engines here: {reason}")
    try:
        return Engine.load(path)
    except EngineLoadError as exc:
        pytest.skip(f"deserialize failed on this GPU: {exc}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_load_without_gpu_explains_why(built_engine: Path) -> None:
    with pytest.raises(EngineLoadError) as info:
        Engine.load(built_engine)
    text = str(info.value)
    assert f"could not deserialize engine file {built_engine}" in text
    assert "no CUDA device is visible to torch" in text and "Hopper" in text


def test_load_checks_file_before_deserializing(built_engine: Path) -> None:
    built_engine.write_bytes(built_engine.read_bytes()[:-1])
    with pytest.raises(EngineLoadError, match="truncated"):
        Engine.load(built_engine)


def test_bindings_from_metadata(built_engine: Path) -> None:
    meta = json.loads(sidecar_path(built_engine).read_text())
    bindings = TensorBinding.from_metadata(meta)
    assert [(b.name, b.is_input, b.dtype, b.shape) for b in bindings] == [
        ("x", True, torch.float32, (1, 3, 12, 12)),
        ("y", False, torch.float32, (1, 8, 12, 12)),
    ]


@pytest.mark.parametrize(
    "tensor, message",
    [
        (torch.zeros(4, 3, 12, 12, dtype=torch.float16), "must be torch.float32, got torch.float16"),
        (torch.zeros(4, 3, 12), r"must have 4 dims \(-1, 3, 12, 12\), got shape \(4, 3, 12\)"),
        (torch.zeros(4, 3, 12, 11), r"dim 3 must be 12 .*got shape \(4, 3, 12, 11\)"),
        (
            torch.zeros(9, 3, 12, 12),
            r"outside the engine's optimization profile min \(1, 3, 12, 12\) .. max \(8, 3",
        ),
        ([1.0, 2.0], "expected a torch.Tensor, got list"),
    ],
)
def test_check_input_errors(dynamic_spec: InputSpec, tensor: Any, message: str) -> None:
    binding = TensorBinding(
        "x", True, torch.float32, dynamic_spec.shape, dynamic_spec.min_shape, dynamic_spec.max_shape
    )
    check_input(binding, torch.zeros(8, 3, 12, 12))
    with pytest.raises(EngineInputError, match=message):
        check_input(binding, tensor)


def test_check_input_device() -> None:
    binding = TensorBinding("x", True, torch.float32, (2,))
    with pytest.raises(
        EngineInputError, match=r"is on cpu, the engine runs on cuda:0; move it with .to\('cuda:0'\)"
    ):
        check_input(binding, torch.zeros(2), torch.device("cuda", 0))


def test_gpu_unavailable_reason_is_precise() -> None:
    reason = gpu_unavailable_reason()
    if not torch.cuda.is_available():
        assert reason == "no CUDA device is visible to torch (torch.cuda.is_available() is False)"


@pytest.mark.gpu
def test_static_engine_matches_torch_reference(
    built_engine: Path, qdq_reference: Callable[..., torch.Tensor]
) -> None:
    engine = _engine_or_skip(built_engine)
    assert engine.input_names == ["x"] and engine.output_names == ["y"]
    x = torch.randn(1, 3, 12, 12, device=engine.device) * 2
    y = engine(x)["y"].cpu()  # .cpu() waits for the stream
    ref = qdq_reference(x)
    assert y.shape == ref.shape == (1, 8, 12, 12)
    assert torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0) > 0.9999
    assert (y - ref).abs().max().item() <= 1e-3 * ref.abs().max().item()
    with pytest.raises(EngineInputError, match="is on cpu"):
        engine(x.cpu())
    with pytest.raises(EngineInputError, match="no input 'images'"):
        engine(images=x)


@pytest.mark.gpu
def test_dynamic_engine_runs_every_batch_in_profile(
    tmp_path: Path,
    qdq_network: Callable[..., Any],
    dynamic_spec: InputSpec,
    qdq_reference: Callable[..., torch.Tensor],
) -> None:
    builder, net, _keep = qdq_network(None)
    data = engine_bytes_from_network(builder, net, [dynamic_spec])
    art = save_engine(data, tmp_path / "dyn.plan", network_io_metadata(net, [dynamic_spec]))
    engine = _engine_or_skip(art.engine_path)
    for batch in (1, 3, 8):
        x = torch.randn(batch, 3, 12, 12, device=engine.device)
        y = engine(x=x)["y"].cpu()
        ref = qdq_reference(x)
        assert y.shape == (batch, 8, 12, 12)
        assert (y - ref).abs().max().item() <= 1e-3 * ref.abs().max().item()
    with pytest.raises(EngineInputError, match="optimization profile"):
        engine(torch.randn(9, 3, 12, 12, device=engine.device))
