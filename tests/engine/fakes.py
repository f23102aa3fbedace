"""Stand-ins for a TensorRT runtime, a deserialized engine, its execution context and CUDA streams, for CPU tests.

They implement only what ``Engine`` calls and record every call, so stream selection, address binding,
shape inference, runtime config, runtime cache and the validity check are checked on a machine without
a GPU. Enums (tensor mode, location, dtypes, validity, kernel specialization strategy) are the real
library's. A context given ``compute`` really computes: it reads its input from the bound address and
writes its output there (CPU memory standing in for device memory), so whole evaluations run on fakes.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine import loading
from fx2trt_pipeline.engine.compatibility import GpuInfo

#: The library whose enums the fakes return: TensorRT-RTX where installed (its engines are what CI builds).
FAKE_LIBRARY = "tensorrt_rtx" if trt_api.is_available("tensorrt_rtx") else None


def _trt() -> Any:
    return trt_api.get_trt(FAKE_LIBRARY)


class FakeStream:
    """A CUDA stream: a handle, ``wait_stream`` recorded into a shared log."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.cuda_stream = name, log, 1000 + len(log) + len(name)

    def wait_stream(self, other: FakeStream) -> None:
        self.log.append(f"{self.name} waits {other.name}")


def memory_at(ptr: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The CPU tensor of ``shape`` at address ``ptr`` (shares the memory: writes land there)."""
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer((ctypes.c_char * nbytes).from_address(ptr), dtype=dtype).view(shape)


class FakeContext:
    """An IExecutionContext: accepts shapes and addresses (or refuses the names in ``refuse``).

    Args:
        output_shape: the output's shape; its first dim follows the batch of input ``x`` once set.
        compute: ``x -> y`` run on the bound memory at each enqueue (``None``: computes nothing).
        hook: called at the start of each ``execute_async_v3`` (e.g. to let another thread in).
    """

    def __init__(
        self,
        output_shape: tuple[int, ...],
        log: list[str],
        refuse: tuple[str, ...] = (),
        compute: Callable[[torch.Tensor], torch.Tensor] | None = None,
        hook: Callable[[], None] | None = None,
    ) -> None:
        self.output_shape, self.log, self.refuse = output_shape, log, refuse
        self.compute, self.hook = compute, hook
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.shape_log: list[tuple[int, ...]] = []
        self.executed: list[tuple[int, ...]] = []  # the input shape each enqueue saw
        self.ok = True
        self.input_shape: tuple[int, ...] | None = None  # a static engine's input shape (set by FakeCudaEngine)
        self.missing: list[str] = []  # what infer_shapes reports as insufficiently specified
        self.infer_error: str | None = None  # infer_shapes raises RuntimeError(infer_error)
        self.failed_output: bool = False  # get_tensor_shape of the output: Dims with nbDims = -1

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        self.shape_log.append(tuple(shape))
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return name not in self.refuse

    def infer_shapes(self) -> list[str]:
        if self.infer_error is not None:
            raise RuntimeError(self.infer_error)
        return list(self.missing)

    def _input_shape(self) -> tuple[int, ...]:
        return self.shapes.get("x") or self.input_shape or (1,)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self.failed_output:
            return ()
        batch = self.shapes["x"][0] if "x" in self.shapes else self.output_shape[0]
        return (batch, *self.output_shape[1:])

    def execute_async_v3(self, handle: int) -> bool:
        if self.hook is not None:
            self.hook()
        self.executed.append(self._input_shape())
        self.log.append(f"execute on {handle}")
        if self.compute is not None and self.ok:
            x = memory_at(self.addresses["x"], self._input_shape(), torch.float32)
            y = self.compute(x.clone())
            memory_at(self.addresses["y"], tuple(y.shape), torch.float32).copy_(y)
        return self.ok


class FakeCache:
    """An IRuntimeCache: deserialize records the blob, serialize returns ``content``."""

    def __init__(self, accept: bool = True) -> None:
        self.loaded: bytes | None = None
        self.accept, self.content = accept, b"compiled kernels"

    def deserialize(self, blob: bytes) -> bool:
        self.loaded = bytes(blob)
        return self.accept

    def serialize(self) -> bytes:
        return self.content


class FakeRuntimeConfig:
    """An IRuntimeConfig of TensorRT-RTX."""

    def __init__(self, cache: FakeCache) -> None:
        self.dynamic_shapes_kernel_specialization_strategy = None
        self.cache, self.set_cache = cache, None

    def create_runtime_cache(self) -> FakeCache:
        return self.cache

    def set_runtime_cache(self, cache: FakeCache) -> bool:
        self.set_cache = cache
        return True


class FakeCudaEngine:
    """An ICudaEngine with input ``x`` and output ``y``: by default (-1, 3) in profile 1..8 (opt 4) -> (-1, 2).

    ``input_shape`` without -1 makes a static engine (no profile).
    """

    def __init__(
        self,
        context: FakeContext | None,
        cache: FakeCache | None = None,
        input_shape: tuple[int, ...] = (-1, 3),
        output_shape: tuple[int, ...] = (-1, 2),
        profile: tuple[tuple[int, ...], ...] = ((1, 3), (4, 3), (8, 3)),
    ) -> None:
        self.context, self.config = context, FakeRuntimeConfig(cache or FakeCache())
        self.num_io_tensors, self.context_args = 2, None
        self.shapes, self.profile = {"x": input_shape, "y": output_shape}, list(profile)
        if context is not None and -1 not in input_shape:
            context.input_shape = input_shape

    def get_tensor_name(self, index: int) -> str:
        return ("x", "y")[index]

    def get_tensor_mode(self, name: str) -> Any:
        trt = _trt()
        return trt.TensorIOMode.INPUT if name == "x" else trt.TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return self.profile

    def get_tensor_location(self, name: str) -> Any:
        return _trt().TensorLocation.DEVICE

    def get_tensor_dtype(self, name: str) -> Any:
        return _trt().float32

    def create_runtime_config(self) -> FakeRuntimeConfig:
        return self.config

    def create_execution_context(self, *args: Any) -> FakeContext | None:
        self.context_args = args
        return self.context


class FakeDatacenterEngine(FakeCudaEngine):
    """An engine of a library without a runtime config (datacenter TensorRT before IRuntimeConfig)."""

    create_runtime_config = property(lambda self: (_ for _ in ()).throw(AttributeError("create_runtime_config")))


class FakeRuntime:
    """A TensorRT-RTX Runtime: ``get_engine_validity`` says ``validity`` and ``flags``; deserializes to ``engine``."""

    def __init__(self, engine: Any = None, validity: str = "VALID", flags: tuple[str, ...] = ()) -> None:
        self.engine, self.validity, self.flags = engine, validity, flags
        self.asked: list[int] = []  # sizes of the plans asked about
        self.deserialized: list[int] = []

    def get_engine_validity(self, data: bytes) -> tuple[Any, int]:
        trt = trt_api.get_trt("tensorrt_rtx")
        self.asked.append(len(data))
        flags = sum(int(getattr(trt.EngineInvalidityDiagnostics, f)) for f in self.flags)
        return getattr(trt.EngineValidity, self.validity), flags

    def deserialize_cuda_engine(self, data: bytes) -> Any:
        self.deserialized.append(len(data))
        return self.engine


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """torch.cuda patched so that ``Engine`` runs on fakes: device 0, a default stream, new streams logged."""
    log: list[str] = []
    streams = {"default": FakeStream("default", log), "log": log, "made": []}
    streams["current"] = streams["default"]

    def new_stream(device: Any = None) -> FakeStream:
        made = FakeStream(f"private{len(streams['made'])}", log)
        streams["made"].append(made)
        return made

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: streams["current"])
    monkeypatch.setattr(torch.cuda, "default_stream", lambda device=None: streams["default"])
    monkeypatch.setattr(torch.cuda, "Stream", new_stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    return streams


class FakeGpu:
    """Controls of :func:`fake_gpu`: which GPU torch reports, and the runtime ``Engine`` gets."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch, self.runtime = monkeypatch, FakeRuntime()
        self.made_with: list[Any] = []  # (trt module, logger) of every runtime made
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(loading, "make_runtime", self._make_runtime)
        self.set("NVIDIA RTX A6000", 8, 6)

    def _make_runtime(self, trt: Any, logger: Any) -> FakeRuntime:
        self.made_with.append((trt, logger))
        return self.runtime

    def set(self, name: str, major: int, minor: int) -> GpuInfo:
        """Make torch report this GPU."""
        gpu = GpuInfo(name, major, minor)
        self.monkeypatch.setattr(GpuInfo, "of", classmethod(lambda cls, device=None: gpu))
        return gpu

    def run_on_cpu(self) -> None:
        """Engines resolve ``cuda`` to the CPU, so the fakes' CPU tensors pass the device check."""
        cpu = torch.device("cpu")
        self.monkeypatch.setattr(loading, "resolve_device", lambda device=None: cpu)
        self.monkeypatch.setattr("fx2trt_pipeline.engine.runtime.resolve_device", lambda device=None: cpu)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, fake_cuda: dict[str, Any]) -> FakeGpu:
    """A CUDA GPU (an RTX A6000 unless ``.set(...)``) and a :class:`FakeRuntime` (``.runtime``) for ``Engine``."""
    return FakeGpu(monkeypatch)
