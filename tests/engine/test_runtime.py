"""Engine runtime on the CPU: input checks, devices, streams, alignment, runtime config, skip policy.

Everything that does not need a GPU runs here, on fake engine/context/stream objects (tests/engine/fakes.py)
driven through the real ``Engine`` code. Execution on a GPU is in test_runtime_gpu.py (``pytest -m gpu``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine import compatibility
from fx2trt_pipeline.engine.artifact import sidecar_path
from fx2trt_pipeline.engine.bindings import ALIGNMENT, aligned_empty, bind_address
from fx2trt_pipeline.engine.compatibility import GpuInfo, deployment_target
from fx2trt_pipeline.engine.runtime import (
    Engine,
    EngineInputError,
    RuntimeOptions,
    TensorBinding,
    check_input,
    gpu_unavailable_reason,
    resolve_device,
)
from fx2trt_pipeline.engine.runtime_config import create_context
from fx2trt_pipeline.errors import (
    BackendUnavailableError,
    ConfigError,
    EngineIncompatibleError,
    EngineLoadError,
    EngineRuntimeError,
)
from fx2trt_pipeline.network.inputs import InputSpec
from tests.engine import gpu
from tests.engine.fakes import FakeCache, FakeContext, FakeCudaEngine, FakeDatacenterEngine, FakeGpu, FakeStream


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_load_without_gpu_is_backend_unavailable(built_engine: Path) -> None:
    with pytest.raises(EngineIncompatibleError) as info:
        Engine.load(built_engine)
    assert isinstance(info.value, BackendUnavailableError) and isinstance(info.value, EngineLoadError)
    text = str(info.value)
    meta = json.loads(sidecar_path(built_engine).read_text())
    assert f"engine file {built_engine} cannot run here: no CUDA device is visible to torch" in text
    assert deployment_target(meta) in text and "not Hopper H100/H200" in text


def test_load_on_an_unsupported_gpu_states_the_deployment_target(built_engine: Path, fake_gpu: FakeGpu) -> None:
    fake_gpu.set("NVIDIA H200", 9, 0)
    fake_gpu.runtime.validity, fake_gpu.runtime.flags = "INVALID", ("UNSUPPORTED_CC",)
    meta = json.loads(sidecar_path(built_engine).read_text())
    with pytest.raises(EngineIncompatibleError) as info:
        Engine.load(built_engine)
    text = str(info.value)
    assert "engine validity check on NVIDIA H200 (compute capability 9.0, Hopper): INVALID ['UNSUPPORTED_CC']" in text
    assert text.endswith(
        f"It is a {deployment_target(meta)} Run it on a GPU it targets, or rebuild it there "
        "(BuildOptions(compute_capabilities=...) for TensorRT-RTX)."
    )
    assert fake_gpu.runtime.deserialized == []  # refused before deserializing
    reason = gpu_unavailable_reason(meta)  # what the validator checks first (exit 3)
    assert reason is not None and reason.startswith("NVIDIA H200 (compute capability 9.0, Hopper) is not a target")


def test_bytes_without_sidecar_are_checked_against_their_header_targets(built_engine: Path, fake_gpu: FakeGpu) -> None:
    if trt_api.library_name() != "tensorrt_rtx":
        pytest.skip("only TensorRT-RTX plan headers name their target GPUs")
    fake_gpu.set("NVIDIA H200", 9, 0)
    fake_gpu.runtime.validity, fake_gpu.runtime.flags = "INVALID", ("UNSUPPORTED_CC",)
    data = built_engine.read_bytes()
    with pytest.raises(EngineIncompatibleError, match=r"compute capability 8\.0, 8\.6, 8\.9, 12\.0, 12\.1 and later"):
        Engine.from_bytes(data)
    # On a GPU the engine runs on, a failed deserialization is a load error, never "incompatible" (or a skip).
    # The runtime is a fake: a real one deserializes this plan on such a GPU.
    fake_gpu.set("NVIDIA RTX A6000", 8, 6)
    fake_gpu.runtime.validity, fake_gpu.runtime.flags = "VALID", ()
    with pytest.raises(EngineLoadError, match="could not deserialize the engine on NVIDIA RTX A6000") as info:
        Engine.from_bytes(data)
    assert not isinstance(info.value, EngineIncompatibleError)
    assert fake_gpu.runtime.deserialized == [len(data)]


def test_load_checks_file_before_deserializing(built_engine: Path) -> None:
    built_engine.write_bytes(built_engine.read_bytes()[:-1])
    with pytest.raises(EngineLoadError, match="truncated"):
        Engine.load(built_engine)


def test_cpu_device_is_an_error_not_a_switch(built_engine: Path) -> None:
    with pytest.raises(ConfigError, match=r"TensorRT engines run on CUDA devices only, got device='cpu'"):
        Engine.load(built_engine, device="cpu")


def test_index_less_cuda_device_means_the_current_one(fake_cuda: dict[str, Any]) -> None:
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 0)
    assert resolve_device(None) == resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device(1) == torch.device("cuda", 1)
    engine = Engine(FakeCudaEngine(FakeContext((1, 2), [])), device=torch.device("cuda"))
    assert engine.device == torch.device("cuda", 0)  # so inputs on cuda:0 pass the device check
    check_input(TensorBinding("x", True, torch.float32, (2,)), torch.zeros(2), torch.device("cpu"))


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
    with pytest.raises(EngineInputError, match=r"is on cpu, the engine runs on cuda:0; move it with .to\('cuda:0'\)"):
        check_input(binding, torch.zeros(2), torch.device("cuda", 0))


def _cpu_engine(context: FakeContext, options: RuntimeOptions | None = None, path: Path | None = None) -> Engine:
    engine = Engine(FakeCudaEngine(context), path=path, options=options)
    engine.device = torch.device("cpu")  # the fakes compute nothing: CPU tensors stand in for device memory
    return engine


def test_default_stream_caller_gets_a_private_stream_ordered_both_ways(fake_cuda: dict[str, Any]) -> None:
    log = fake_cuda["log"]
    context = FakeContext((1, 2), log)
    engine = _cpu_engine(context)
    out = engine(torch.zeros(4, 3))
    private = fake_cuda["made"][0]
    assert log == ["private0 waits default", f"execute on {private.cuda_stream}", "default waits private0"]
    assert out["y"].shape == (4, 2) and context.shapes == {"x": (4, 3)}
    engine(torch.zeros(2, 3))
    assert len(fake_cuda["made"]) == 1  # one private stream per Engine, made once


def test_caller_on_its_own_stream_is_enqueued_there(fake_cuda: dict[str, Any]) -> None:
    log = fake_cuda["log"]
    fake_cuda["current"] = user = FakeStream("user", log)
    engine = _cpu_engine(FakeContext((1, 2), log))
    engine(torch.zeros(3, 3))
    assert log == [f"execute on {user.cuda_stream}"] and fake_cuda["made"] == []


def test_failed_enqueue_raises_and_still_orders_the_caller(fake_cuda: dict[str, Any]) -> None:
    context = FakeContext((1, 2), fake_cuda["log"])
    context.ok = False
    with pytest.raises(EngineRuntimeError, match="TensorRT failed to enqueue the engine"):
        _cpu_engine(context)(torch.zeros(1, 3))
    assert fake_cuda["log"][-1] == "default waits private0"


def test_misaligned_input_is_bound_through_an_aligned_copy(fake_cuda: dict[str, Any]) -> None:
    context = FakeContext((1, 2), fake_cuda["log"])
    engine = _cpu_engine(context)
    base = aligned_empty((64,), torch.float32, torch.device("cpu"))
    base.copy_(torch.arange(64.0))
    offset_view = base[1:13].view(4, 3)  # contiguous, 4 bytes past a boundary: .contiguous() is a no-op
    assert offset_view.is_contiguous() and offset_view.data_ptr() % ALIGNMENT == 4
    out = engine(offset_view)
    assert context.addresses["x"] != offset_view.data_ptr() and context.addresses["x"] % ALIGNMENT == 0
    assert context.addresses["y"] == out["y"].data_ptr() and out["y"].data_ptr() % ALIGNMENT == 0
    aligned = base[:12].view(4, 3)
    engine(aligned)
    assert context.addresses["x"] == aligned.data_ptr()  # aligned inputs are bound without a copy
    engine(base[:12].view(3, 4).t())  # non-contiguous: copied too
    assert context.addresses["x"] % ALIGNMENT == 0


def test_refused_or_unaligned_addresses_name_the_tensor(fake_cuda: dict[str, Any]) -> None:
    context = FakeContext((1, 2), fake_cuda["log"], refuse=("y",))
    with pytest.raises(EngineRuntimeError, match=r"TensorRT refused the address 0x[0-9a-f]+ of engine tensor 'y'"):
        _cpu_engine(context)(torch.zeros(2, 3))
    base = aligned_empty((8,), torch.float32, torch.device("cpu"))
    with pytest.raises(EngineRuntimeError, match=r"Engine tensor 'x' is at address .* not 256-byte aligned"):
        bind_address(FakeContext((1,), []), "x", base[1:])


def test_runtime_config_specializes_eagerly_by_default(fake_cuda: dict[str, Any]) -> None:
    trt = trt_api.get_trt()
    if not hasattr(trt, "DynamicShapesKernelSpecializationStrategy"):
        pytest.skip(f"{trt_api.library_name()} has no dynamic-shape kernel specialization (TensorRT-RTX only)")
    strategy = trt.DynamicShapesKernelSpecializationStrategy
    cuda_engine = FakeCudaEngine(FakeContext((1, 2), []))
    Engine(cuda_engine)
    assert cuda_engine.context_args == (cuda_engine.config,)  # the context is created with the config
    assert cuda_engine.config.dynamic_shapes_kernel_specialization_strategy == strategy.EAGER
    assert cuda_engine.config.set_cache is None  # no runtime cache unless asked for
    Engine(cuda_engine, options=RuntimeOptions(dynamic_shapes="none"))
    assert cuda_engine.config.dynamic_shapes_kernel_specialization_strategy == strategy.NONE


def test_runtime_cache_next_to_the_engine_is_loaded_and_saved(
    tmp_path: Path, fake_cuda: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "model.plan"
    cache_file = tmp_path / "model.plan.runtime_cache"
    cache_file.write_bytes(b"kernels of an earlier run")
    cache = FakeCache(accept=False)
    cuda_engine = FakeCudaEngine(FakeContext((1, 2), []), cache)
    with caplog.at_level(logging.WARNING, logger="fx2trt_pipeline.tensorrt"):
        engine = Engine(cuda_engine, path=path, options=RuntimeOptions(runtime_cache=True))
    assert cache.loaded == b"kernels of an earlier run" and cuda_engine.config.set_cache is cache
    assert "was written for another GPU/driver/version" in caplog.text  # rejected: compiled afresh
    engine.device = torch.device("cpu")
    engine.warm_up()  # saves the cache after compiling
    assert cache_file.read_bytes() == b"compiled kernels"
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_warm_up_runs_opt_max_and_given_batch_sizes(fake_cuda: dict[str, Any]) -> None:
    context = FakeContext((1, 2), fake_cuda["log"])
    seconds = _cpu_engine(context).warm_up(batch_sizes=[3, 8, 20])
    assert context.shape_log == [(4, 3), (8, 3), (3, 3)] and seconds >= 0.0  # 8 repeats max; 20 clamps to 8


def test_settings_a_library_lacks_are_config_errors(tmp_path: Path, fake_cuda: dict[str, Any]) -> None:
    trt = trt_api.get_trt()
    cuda_engine = FakeDatacenterEngine(FakeContext((1, 2), []))
    assert create_context(cuda_engine, trt, RuntimeOptions(), None, "TensorRT 10")[0] is cuda_engine.context
    assert cuda_engine.context_args == ()
    with pytest.raises(ConfigError, match="dynamic_shapes='eager' needs TensorRT-RTX; TensorRT 10 compiles"):
        create_context(cuda_engine, trt, RuntimeOptions(dynamic_shapes="eager"), None, "TensorRT 10")
    with pytest.raises(ConfigError, match="runtime_cache needs TensorRT-RTX"):
        create_context(cuda_engine, trt, RuntimeOptions(), tmp_path / "c", "TensorRT 10")
    with pytest.raises(ConfigError, match="loaded from bytes: give the cache file's path"):
        RuntimeOptions(runtime_cache=True).cache_path(None)
    with pytest.raises(ConfigError, match="dynamic_shapes must be one of"):
        RuntimeOptions(dynamic_shapes="fast")


def test_gpu_tests_skip_only_with_the_stated_reason(built_engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "gpu_unavailable_reason", lambda meta=None: "no CUDA device is visible to torch")
    with pytest.raises(pytest.skip.Exception, match="cannot run TensorRT engines here: no CUDA device"):
        gpu.engine_or_skip(built_engine)
    # A supported GPU is present: a load error is a failure, never a skip.
    monkeypatch.setattr(gpu, "gpu_unavailable_reason", lambda meta=None: None)

    def broken(cls: type, path: Path, **kwargs: Any) -> Engine:
        raise EngineLoadError("TensorRT could not deserialize the engine")

    monkeypatch.setattr(Engine, "load", classmethod(broken))
    with pytest.raises(EngineLoadError, match="could not deserialize"):
        gpu.engine_or_skip(built_engine)


def test_gpu_unavailable_reason_is_precise(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        assert gpu_unavailable_reason() == "no CUDA device is visible to torch (torch.cuda.is_available() is False)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(GpuInfo, "of", classmethod(lambda cls, device=None: GpuInfo("NVIDIA RTX A6000", 8, 6)))
    assert compatibility.gpu_unavailable_reason() is None  # a default TensorRT-RTX engine runs on 8.6


def test_sidecar_dtype_without_torch_equivalent_is_a_load_error() -> None:
    from fx2trt_pipeline.engine.bindings import TensorBinding
    from fx2trt_pipeline.errors import EngineLoadError

    meta = {"inputs": [{"name": "x", "dtype": "complex64", "shape": [1, 3]}], "outputs": []}
    with pytest.raises(EngineLoadError, match="'x'.*complex64"):
        TensorBinding.from_metadata(meta)
