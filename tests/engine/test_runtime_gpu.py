"""Engines executed on a GPU the library supports (``pytest -m gpu``).

Each test skips only for the stated reason the engine cannot run here (no TensorRT library, no CUDA
device, a GPU the engine does not target such as Hopper for TensorRT-RTX); past that point every load
or run error fails the test, and every engine must have run on the expected library (tests/engine/gpu.py).
A job with a GPU runs them so that they cannot pass by skipping (docs/running_engines.md)::

    FX2TRT_REQUIRE_GPU=1 FX2TRT_TRT_LIBRARY=tensorrt_rtx python -m pytest -m gpu

The stream tests provoke the races they guard against: ``torch.cuda._sleep`` keeps one stream busy so
that a missing ``wait_stream`` shows as wrong numbers, and a run without the wait shows the check can fail.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import sidecar_path
from fx2trt_pipeline.engine.compatibility import deployment_target, gpu_unavailable_reason
from fx2trt_pipeline.engine.engine_builder import (
    build_engine,
    engine_bytes_from_network,
    network_io_metadata,
    save_engine,
)
from fx2trt_pipeline.engine.runtime import Engine, EngineInputError, RuntimeOptions
from fx2trt_pipeline.errors import ConfigError, EngineIncompatibleError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.validate.compare import Tolerance
from fx2trt_pipeline.validate.runners import TensorRTEngineRunner, TorchRunner, compare_runners
from tests.engine.gpu import assert_ran_on_expected_library, engine_or_skip, skip_unless_engines_run

pytestmark = pytest.mark.gpu


def _close(y: torch.Tensor, ref: torch.Tensor) -> bool:
    return (y.cpu() - ref).abs().max().item() <= 1e-3 * ref.abs().max().item()


@pytest.fixture
def dynamic_engine(tmp_path: Path, qdq_network: Callable[..., Any], dynamic_spec: InputSpec) -> Path:
    builder, net, _keep = qdq_network(None)
    data = engine_bytes_from_network(builder, net, [dynamic_spec])
    return save_engine(data, tmp_path / "dyn.plan", network_io_metadata(net, [dynamic_spec])).engine_path


def test_a_gpu_the_engine_does_not_target_is_refused_before_deserializing(built_engine: Path) -> None:
    # Either outcome is checked: a GPU the engine targets loads it, any other refuses it with the target.
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    meta = json.loads(sidecar_path(built_engine).read_text())
    if gpu_unavailable_reason(meta) is None:
        assert_ran_on_expected_library(Engine.load(built_engine))
        return
    with pytest.raises(EngineIncompatibleError, match=f"It is a {re.escape(deployment_target(meta))}"):
        Engine.load(built_engine)


def test_static_engine_matches_torch_reference(built_engine: Path, qdq_reference: Callable[..., torch.Tensor]) -> None:
    engine = engine_or_skip(built_engine)
    assert engine.input_names == ["x"] and engine.output_names == ["y"]
    x = torch.randn(1, 3, 12, 12, device=engine.device) * 2
    y = engine(x)["y"].cpu()  # .cpu() on the caller's stream: ordered after the engine, no explicit sync
    ref = qdq_reference(x)
    assert y.shape == ref.shape == (1, 8, 12, 12)
    assert torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0) > 0.9999
    assert _close(y, ref)
    with pytest.raises(EngineInputError, match="is on cpu"):
        engine(x.cpu())
    with pytest.raises(EngineInputError, match="no input 'images'"):
        engine(images=x)
    # A contiguous view 4 bytes past a 256-byte boundary: bound through an aligned copy, same result.
    buffer = torch.empty(x.numel() + 1, device=engine.device)
    view = buffer[1:].view_as(x)
    view.copy_(x)
    assert view.data_ptr() % 256 == 4
    assert torch.equal(engine(view)["y"].cpu(), y)


def test_dynamic_engine_runs_every_batch_and_a_partial_last_batch(
    dynamic_engine: Path, qdq_reference: Callable[..., torch.Tensor]
) -> None:
    engine = engine_or_skip(dynamic_engine)
    assert engine.warm_up(batch_sizes=[3]) >= 0.0
    for batch in (1, 3, 8):
        x = torch.randn(batch, 3, 12, 12, device=engine.device)
        y = engine(x=x)["y"]
        assert y.shape == (batch, 8, 12, 12) and _close(y, qdq_reference(x))
    data = torch.randn(19, 3, 12, 12, device=engine.device)  # batches of 8, 8 and a partial 3
    out = torch.cat([engine(data[i : i + 8])["y"] for i in range(0, 19, 8)])
    assert out.shape == (19, 8, 12, 12) and _close(out, qdq_reference(data))
    with pytest.raises(EngineInputError, match="optimization profile"):
        engine(torch.randn(9, 3, 12, 12, device=engine.device))


def test_default_and_user_streams_give_the_same_outputs(
    dynamic_engine: Path, qdq_reference: Callable[..., torch.Tensor]
) -> None:
    engine = engine_or_skip(dynamic_engine)
    x = torch.randn(4, 3, 12, 12, device=engine.device)
    on_default = engine(x)["y"]
    assert engine._stream is not None  # the default-stream caller got a private stream
    private = engine._stream
    user = torch.cuda.Stream(engine.device)
    user.wait_stream(torch.cuda.current_stream(engine.device))
    with torch.cuda.stream(user):
        on_user = engine(x)["y"]
        summed = on_user.sum()  # later work on the caller's stream sees the outputs
    user.synchronize()
    assert engine._stream is private
    assert torch.equal(on_default.cpu(), on_user.cpu()) and _close(on_default, qdq_reference(x))
    assert torch.isclose(summed.cpu(), on_user.cpu().sum())


def test_index_less_cuda_device_and_cpu_device(dynamic_engine: Path) -> None:
    engine_or_skip(dynamic_engine)  # skips with the reason where engines cannot run
    runner = TensorRTEngineRunner(dynamic_engine, device=torch.device("cuda"))
    assert_ran_on_expected_library(runner.engine)
    assert runner.device == torch.device("cuda", torch.cuda.current_device())
    out = runner.run({"x": torch.randn(2, 3, 12, 12)})  # CPU feeds go to the engine's device
    assert out["y"].device == runner.device
    with pytest.raises(ConfigError, match="CUDA devices only"):
        TensorRTEngineRunner(dynamic_engine, device="cpu")
    with pytest.raises(ConfigError, match="CUDA devices only"):
        TensorRTEngineRunner(runner.engine, device="cpu")


def test_runtime_cache_is_written_and_reused(dynamic_engine: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = RuntimeOptions(dynamic_shapes="eager", runtime_cache=True)
    if trt_api.library_name() != "tensorrt_rtx":  # datacenter TensorRT compiles nothing at run time
        skip_unless_engines_run(json.loads(sidecar_path(dynamic_engine).read_text()))
        with pytest.raises(ConfigError, match="needs TensorRT-RTX"):
            Engine.load(dynamic_engine, options=options)
        return
    first = engine_or_skip(dynamic_engine, options)
    first.warm_up()
    cache = dynamic_engine.with_name(dynamic_engine.name + ".runtime_cache")
    assert cache.is_file() and cache.stat().st_size > 0
    with caplog.at_level(logging.WARNING, logger="fx2trt_pipeline.tensorrt"):
        second = engine_or_skip(dynamic_engine, options)
    # A rejected cache only logs a warning and compiles afresh: here that is the failure to catch.
    assert "Runtime cache" not in caplog.text, caplog.text
    x = torch.randn(5, 3, 12, 12, device=second.device)
    assert torch.equal(first(x)["y"].cpu(), second(x)["y"].cpu())


#: GPU cycles torch.cuda._sleep spins: a few hundred milliseconds, far longer than the tiny engine runs.
_CYCLES = int(5e8)


def test_the_engine_waits_for_inputs_the_caller_is_still_writing(
    dynamic_engine: Path, qdq_reference: Callable[..., torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fx2trt_pipeline.engine import runtime

    engine = engine_or_skip(dynamic_engine)
    engine.warm_up(batch_sizes=[4])

    def late_input() -> tuple[torch.Tensor, torch.Tensor]:
        src = torch.randn(4, 3, 12, 12, device=engine.device) * 2
        ref = qdq_reference(src)  # first: it copies to the host, which would wait for the sleep below
        x = torch.zeros_like(src)
        torch.cuda.synchronize()
        torch.cuda._sleep(_CYCLES)  # the caller's stream is busy, then writes the input
        x.copy_(src)
        return x, ref

    x, ref = late_input()
    assert _close(engine(x)["y"], ref)  # the private stream waited for the caller's copy
    # The check can fail: without the wait the engine reads the zeros.
    monkeypatch.setattr(
        runtime, "enqueue_ordered", lambda execute, caller, stream, previous=None: execute(stream.cuda_stream)
    )
    x, ref = late_input()
    y = engine(x)["y"]
    torch.cuda.synchronize()
    assert not _close(y, ref)


def test_the_caller_waits_for_outputs_the_engine_is_still_writing(
    dynamic_engine: Path, qdq_reference: Callable[..., torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fx2trt_pipeline.engine import runtime, streams

    engine = engine_or_skip(dynamic_engine)
    engine.warm_up(batch_sizes=[4])

    def slow_engine(execute: Any, caller: Any, stream: Any, previous: Any = None) -> bool:
        def delayed(handle: int) -> bool:
            with torch.cuda.stream(stream):
                torch.cuda._sleep(_CYCLES)  # the engine's stream is busy before the engine runs
            return execute(handle)

        return streams.enqueue_ordered(delayed, caller, stream, previous)

    monkeypatch.setattr(runtime, "enqueue_ordered", slow_engine)
    x = torch.randn(4, 3, 12, 12, device=engine.device) * 2
    y = engine(x)["y"].cpu()  # read at once on the caller's stream: it must wait for the engine
    assert _close(y, qdq_reference(x))


def test_two_threads_share_one_engine(dynamic_engine: Path, qdq_reference: Callable[..., torch.Tensor]) -> None:
    engine = engine_or_skip(dynamic_engine)
    engine.warm_up(batch_sizes=[2, 5])
    inputs = [torch.randn(b, 3, 12, 12, device=engine.device) for b in (2, 5)]
    torch.cuda.synchronize()
    results: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        stream = torch.cuda.Stream(engine.device)
        with torch.cuda.stream(stream):
            results[i] = [engine(inputs[i])["y"] for _ in range(20)]
        stream.synchronize()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(inputs):
        ref = qdq_reference(x)
        assert all(_close(y, ref) for y in results[i]), f"thread {i}"


class _SmallNet(nn.Module):
    """conv-bn-relu, a residual block, pooling and a classifier: the common INT8 fusion patterns."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_engine_matches_the_simulated_model(tmp_path: Path) -> None:
    skip_unless_engines_run()
    torch.manual_seed(0)
    model = _SmallNet().eval()
    calib = [torch.randn(8, 3, 32, 32) for _ in range(4)]
    qgm = ftp.quantize_model(model, calib, example_inputs=(calib[0],), config=ftp.QuantConfig(show_progress=False))
    spec = InputSpec.dynamic_batch("images", (3, 32, 32), min_batch=1, opt_batch=8, max_batch=8)
    build_engine(qgm, [spec], tmp_path / "small.plan", output_names=["logits"])
    engine = TensorRTEngineRunner(tmp_path / "small.plan")
    assert_ran_on_expected_library(engine.engine)
    simulated = TorchRunner(qgm.cuda(), ["images"], ["logits"], name="simulated")
    data = torch.randn(19, 3, 32, 32, device="cuda")
    # Cosine >= 0.999 per batch, not tie-aware parity: validate/tie_parity.py feeds the reference int8 values
    # region by region, which a fused engine cannot take; a value on a rounding tie may quantize one step apart.
    for start in range(0, 19, 8):  # 8, 8 and a partial last batch of 3
        feeds = {"images": data[start : start + 8]}
        result = compare_runners(simulated, engine, feeds, Tolerance(min_cosine=0.999))
        assert result, str(result)
