"""Engine faults that only a GPU would show, provoked on fakes: each test fails without its fix.

The fakes (tests/engine/fakes.py) stand for TensorRT's runtime, engine and context and for CUDA streams;
the code under test is the real ``Engine``. What a real GPU adds is checked in test_runtime_gpu.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import sidecar_path
from fx2trt_pipeline.engine.runtime import Engine
from fx2trt_pipeline.engine.runtime_config import RuntimeOptions, create_context
from fx2trt_pipeline.errors import EngineIncompatibleError, EngineLoadError, EngineRuntimeError
from fx2trt_pipeline.trt_types import make_logger
from tests.engine.fakes import FakeContext, FakeCudaEngine, FakeGpu, FakeStream


def _cpu_engine(context: FakeContext, **kwargs: Any) -> Engine:
    engine = Engine(FakeCudaEngine(context, **kwargs))
    engine.device = torch.device("cpu")  # CPU tensors stand in for device memory
    return engine


# -- can this GPU run the plan: TensorRT-RTX's runtime decides, not the header bits ----------------------


def test_the_runtime_decides_which_gpus_run_the_plan(built_engine: Path, fake_gpu: FakeGpu) -> None:
    data, meta = built_engine.read_bytes(), json.loads(sidecar_path(built_engine).read_text())
    fake_gpu.runtime.engine = FakeCudaEngine(FakeContext((1, 2), []))
    meta["compatibility"]["runs_on"] = ["SM80"]  # the recorded targets leave out the 8.6 GPU below
    fake_gpu.set("NVIDIA RTX A6000", 8, 6)
    engine = Engine.from_bytes(data, meta)  # the runtime says VALID: it runs
    assert engine.library == "tensorrt_rtx" and fake_gpu.runtime.asked == [len(data)]
    # ... and the runtime's INVALID wins over targets that include this GPU.
    meta["compatibility"]["runs_on"] = ["SM80", "SM86"]
    fake_gpu.runtime.validity, fake_gpu.runtime.flags = "INVALID", ("UNSUPPORTED_CC",)
    with pytest.raises(EngineIncompatibleError, match=r"INVALID \['UNSUPPORTED_CC'\]; this GPU is not one the plan"):
        Engine.from_bytes(data, meta)


def test_an_old_driver_cannot_run_the_plan_and_a_malformed_plan_is_a_load_error(
    built_engine: Path, fake_gpu: FakeGpu
) -> None:
    data = built_engine.read_bytes()
    fake_gpu.runtime.validity, fake_gpu.runtime.flags = "INVALID", ("OLD_CUDA_DRIVER",)
    with pytest.raises(EngineIncompatibleError, match="the NVIDIA driver is older than the library needs"):
        Engine.load(built_engine)
    fake_gpu.runtime.flags = ("MALFORMED_ENGINE",)
    with pytest.raises(EngineLoadError, match=r"INVALID \['MALFORMED_ENGINE'\]") as info:
        Engine.from_bytes(data)
    assert not isinstance(info.value, EngineIncompatibleError)


# -- the library comes from the engine -------------------------------------------------------------------


def test_an_engine_loads_with_the_library_that_built_it(
    built_engine: Path, fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch
) -> None:
    rtx = trt_api.get_trt("tensorrt_rtx")
    fake_gpu.runtime.engine = FakeCudaEngine(FakeContext((1, 2), []))
    # An image with both libraries (NGC): datacenter TensorRT is the build default there.
    datacenter = type("tensorrt", (), {"Builder": object, "Runtime": object, "__version__": "10.13.0.35"})
    monkeypatch.setitem(trt_api._MODULES, "tensorrt", datacenter)
    monkeypatch.delenv(trt_api.ENV_VAR, raising=False)
    assert trt_api.build_library() == "tensorrt"
    engine = Engine.load(built_engine)
    trt, logger = fake_gpu.made_with[-1]
    assert engine.library == "tensorrt_rtx" and trt is rtx and isinstance(logger, rtx.ILogger)
    # Where its library is missing, the engine cannot run here (exit code 3), with the remedy.
    monkeypatch.setitem(trt_api._MODULES, "tensorrt_rtx", None)
    with pytest.raises(EngineIncompatibleError, match=r"built with tensorrt_rtx 1\.7.*not installed here"):
        Engine.load(built_engine)


# -- context creation and shape inference say what TensorRT said -----------------------------------------


def test_a_failed_context_quotes_tensorrt_and_guesses_no_cause(fake_cuda: dict[str, Any]) -> None:
    trt = trt_api.get_trt()
    logger = make_logger("WARNING")

    class Refusing(FakeCudaEngine):
        def create_execution_context(self, *args: Any) -> None:
            logger.log(trt.ILogger.Severity.ERROR, "kernel compilation failed for node conv1 (NVRTC error 6)")
            return None

    with pytest.raises(EngineLoadError) as info:
        create_context(Refusing(None), trt, RuntimeOptions(), None, "TensorRT-RTX 1.7.1.116", logger)
    text = str(info.value)
    assert "TensorRT said: kernel compilation failed for node conv1 (NVRTC error 6)" in text
    assert "compiles the engine's kernels for this GPU" in text and "not enough free GPU memory" not in text


@pytest.mark.parametrize(
    "fault, message",
    [
        ("infer_error", r"shape inference failed for inputs x \(2, 3\): profile dimension mismatch"),
        ("missing", r"shape inference failed for inputs x \(2, 3\): \['x'\] not fully specified"),
        ("failed_output", r"shape inference failed for output 'y' with inputs x \(2, 3\): got \(\), expected 2"),
    ],
)
def test_a_failed_shape_inference_is_not_called_data_dependent(
    fake_cuda: dict[str, Any], fault: str, message: str
) -> None:
    context = FakeContext((1, 2), fake_cuda["log"])
    setattr(context, fault, {"infer_error": "profile dimension mismatch", "missing": ["x"]}.get(fault, True))
    with pytest.raises(EngineRuntimeError, match=message) as info:
        _cpu_engine(context)(torch.zeros(2, 3))
    assert "data-dependent" not in str(info.value)
    # A shape that depends on the data (-1 after a successful inference) is its own error.
    with pytest.raises(EngineRuntimeError, match=r"Output 'y' has a data-dependent shape \(2, -1\)"):
        _cpu_engine(FakeContext((1, -1), fake_cuda["log"]))(torch.zeros(2, 3))


# -- one execution context, several threads and streams --------------------------------------------------


def test_calls_from_two_threads_do_not_interleave(fake_cuda: dict[str, Any]) -> None:
    first_in, second_in = threading.Event(), threading.Event()

    def hold_first_call() -> None:
        # The first call waits inside its enqueue for the second thread to reach the context; a lock makes
        # the second wait instead (and the first goes on after the timeout).
        if threading.current_thread().name == "first":
            first_in.set()
            second_in.wait(timeout=0.5)
        else:
            second_in.set()

    context = FakeContext((1, 2), fake_cuda["log"], compute=lambda x: x[:, :2] * 10, hook=hold_first_call)
    engine = _cpu_engine(context)
    inputs = {"first": torch.full((2, 3), 1.0), "second": torch.full((5, 3), 2.0)}
    outputs: dict[str, torch.Tensor] = {}

    def call(name: str) -> None:
        outputs[name] = engine(inputs[name])["y"]

    first = threading.Thread(target=call, args=("first",), name="first")
    first.start()
    first_in.wait(timeout=5)  # the first call is inside its enqueue
    second = threading.Thread(target=call, args=("second",), name="second")
    second.start()
    first.join(), second.join()
    assert context.executed == [(2, 3), (5, 3)]  # each enqueue saw its own shape
    for name, x in inputs.items():
        assert torch.equal(outputs[name], x[:, :2] * 10), name


def test_a_call_on_another_stream_waits_for_the_previous_one(fake_cuda: dict[str, Any]) -> None:
    log = fake_cuda["log"]
    engine = _cpu_engine(FakeContext((1, 2), log))
    engine(torch.zeros(2, 3))  # default stream: runs on the private stream
    fake_cuda["current"] = user = FakeStream("user", log)
    del log[:]
    engine(torch.zeros(2, 3))
    # The context's activation memory is still in use on private0 until that enqueue finishes.
    assert log == ["user waits private0", f"execute on {user.cuda_stream}"]
    del log[:]
    engine(torch.zeros(2, 3))
    assert log == [f"execute on {user.cuda_stream}"]  # same stream: already ordered


def test_warm_up_runs_each_shape_once(fake_cuda: dict[str, Any]) -> None:
    context = FakeContext((1, 2), fake_cuda["log"])
    engine = _cpu_engine(context)
    engine.warm_up(batch_sizes=[3])
    engine.warm_up(batch_sizes=[3, 5])
    assert context.executed == [(4, 3), (8, 3), (3, 3), (5, 3)]
    assert [s["x"] for s in engine.warmed_shapes] == [(4, 3), (8, 3), (3, 3), (5, 3)]


def test_a_static_engine_takes_only_its_batch(fake_cuda: dict[str, Any]) -> None:
    context = FakeContext((4, 2), fake_cuda["log"], compute=lambda x: x[:, :2])
    engine = _cpu_engine(context, input_shape=(4, 3), output_shape=(4, 2))
    x = torch.arange(12.0).view(4, 3)
    assert torch.equal(engine(x)["y"], x[:, :2]) and context.shape_log == []  # no shape set: it is static
    with pytest.raises(EngineRuntimeError, match=r"dim 0 must be 4 \(engine shape \(4, 3\)\), got shape \(2, 3\)"):
        engine(x[:2])
