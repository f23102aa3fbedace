"""Stand-ins for a deserialized engine, its execution context and CUDA streams, for CPU-only tests.

They implement only what ``Engine`` calls and record every call, so stream selection, address binding,
runtime config and runtime cache handling are checked on a machine without a GPU. Enums (tensor
mode, location, dtypes, kernel specialization strategy) are the real library's.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch

from fx2trt_pipeline import trt_api


class FakeStream:
    """A CUDA stream: a handle, ``wait_stream`` recorded into a shared log."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.cuda_stream = name, log, 1000 + len(log) + len(name)

    def wait_stream(self, other: FakeStream) -> None:
        self.log.append(f"{self.name} waits {other.name}")


class FakeContext:
    """An IExecutionContext: accepts shapes and addresses (or refuses the names in ``refuse``)."""

    def __init__(self, output_shape: tuple[int, ...], log: list[str], refuse: tuple[str, ...] = ()) -> None:
        self.output_shape, self.log, self.refuse = output_shape, log, refuse
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.shape_log: list[tuple[int, ...]] = []
        self.ok = True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        self.shape_log.append(tuple(shape))
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return name not in self.refuse

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        batch = self.shapes.get("x", (1,))[0]
        return (batch, *self.output_shape[1:])

    def execute_async_v3(self, handle: int) -> bool:
        self.log.append(f"execute on {handle}")
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
    """An ICudaEngine with input ``x`` (-1, 3) in profile 1..8 (opt 4) and output ``y`` (-1, 2)."""

    def __init__(self, context: FakeContext, cache: FakeCache | None = None) -> None:
        self.context, self.config = context, FakeRuntimeConfig(cache or FakeCache())
        self.num_io_tensors, self.context_args = 2, None

    def get_tensor_name(self, index: int) -> str:
        return ("x", "y")[index]

    def get_tensor_mode(self, name: str) -> Any:
        trt = trt_api.get_trt()
        return trt.TensorIOMode.INPUT if name == "x" else trt.TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3) if name == "x" else (-1, 2)

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [(1, 3), (4, 3), (8, 3)]

    def get_tensor_location(self, name: str) -> Any:
        return trt_api.get_trt().TensorLocation.DEVICE

    def get_tensor_dtype(self, name: str) -> Any:
        return trt_api.get_trt().float32

    def create_runtime_config(self) -> FakeRuntimeConfig:
        return self.config

    def create_execution_context(self, *args: Any) -> FakeContext:
        self.context_args = args
        return self.context


class FakeDatacenterEngine(FakeCudaEngine):
    """An engine of a library without a runtime config (datacenter TensorRT before IRuntimeConfig)."""

    create_runtime_config = property(lambda self: (_ for _ in ()).throw(AttributeError("create_runtime_config")))


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
