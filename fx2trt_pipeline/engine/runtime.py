"""Run a serialized engine on torch CUDA tensors.

``Engine.load(path)`` verifies the file with :func:`~fx2trt_pipeline.engine.artifact.load_engine_bytes`
(size, sha256, library version, header), checks that this GPU is one the engine runs on (the sidecar's
``compatibility`` section; an unsupported GPU raises :class:`EngineIncompatibleError` with the
engine's deployment target), then deserializes it and creates an execution context with a runtime
config (TensorRT-RTX: kernel specialization strategy, optional runtime cache; see
:mod:`~fx2trt_pipeline.engine.runtime_config`).

``engine(x)`` or ``engine(images=x)`` checks each input against the engine (device, dtype, rank, static
dims, profile range) with one clear error, binds it by address (256-byte aligned: an unaligned view is
copied, nothing is cast), sets the shapes of dynamic inputs, allocates the outputs at the shapes
TensorRT infers and enqueues the engine without any host synchronisation: on the caller's stream, or
on a private stream ordered with the caller's default stream (:mod:`~fx2trt_pipeline.engine.streams`).
TensorRT-RTX compiles kernels on first use: call :meth:`Engine.warm_up` before timing anything.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.engine.runtime import Engine
    >>> engine = Engine.load("resnet18_int8.plan")                # doctest: +SKIP
    >>> engine.warm_up()                                          # doctest: +SKIP
    >>> out = engine(torch.randn(8, 3, 224, 224, device="cuda"))  # doctest: +SKIP
    >>> out["logits"].shape                                       # doctest: +SKIP
    torch.Size([8, 1000])
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import load_engine_bytes, parse_rtx_header
from fx2trt_pipeline.engine.bindings import (
    TensorBinding,
    aligned_empty,
    aligned_tensor,
    bind_address,
    check_input,
    warm_up_feeds,
)
from fx2trt_pipeline.engine.compatibility import (
    GpuInfo,
    deployment_target,
    gpu_unavailable_reason,
    incompatibility_reason,
)
from fx2trt_pipeline.engine.runtime_config import RuntimeOptions, create_context, save_cache
from fx2trt_pipeline.engine.streams import engine_stream, enqueue_ordered
from fx2trt_pipeline.errors import (
    ConfigError,
    EngineIncompatibleError,
    EngineInputError,
    EngineLoadError,
    EngineRuntimeError,
)
from fx2trt_pipeline.trt_types import make_logger, torch_dtype

DeviceLike = int | str | torch.device | None


def resolve_device(device: DeviceLike) -> torch.device:
    """The CUDA device an engine runs on, always with an index (``"cuda"`` -> the current device).

    Raises:
        ConfigError: a non-CUDA device such as ``"cpu"``: engines only run on CUDA devices.

    Example:
        >>> resolve_device("cuda:1")
        device(type='cuda', index=1)
        >>> resolve_device("cpu")   # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigError: ...
    """
    dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
    if dev.type != "cuda":
        raise ConfigError(
            f"TensorRT engines run on CUDA devices only, got device={str(dev)!r}. Give a CUDA device "
            "('cuda', 'cuda:1') or leave it unset; to run the engine's network on the CPU use "
            "NetworkExecutorRunner or the QDQ ONNX model in ONNX Runtime."
        )
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


def _validity_diagnostics(runtime: Any, data: bytes, trt: Any) -> str:
    # TensorRT-RTX can say why a plan is invalid for this GPU without deserializing it.
    if not hasattr(runtime, "get_engine_validity") or not hasattr(trt, "EngineInvalidityDiagnostics"):
        return ""
    try:
        validity, flags = runtime.get_engine_validity(data)
    except Exception:  # a diagnostic must never hide the real error
        return ""
    names = [n for n, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(flags) & int(v)]
    return f" TensorRT's engine validity check: {str(validity).split('.')[-1]}" + (f" {names}." if names else ".")


def _default_metadata(data: bytes | None = None) -> dict[str, Any]:
    # Engine bytes without a sidecar: the library in use, and (TensorRT-RTX) the targets in the plan header.
    meta: dict[str, Any] = {"library": {"name": trt_api.library_name(), "version": trt_api.library_version()}}
    header = parse_rtx_header(bytes(data)) if data is not None and trt_api.library_name() == "tensorrt_rtx" else None
    if header is not None:
        meta["target_compute_capabilities"] = header.compute_capabilities
    return meta


def check_runs_here(metadata: Mapping[str, Any] | None, device: DeviceLike, where: str) -> torch.device:
    """The resolved device, after checking that the engine can run on it at all.

    Raises:
        ConfigError: ``device`` is not a CUDA device.
        EngineIncompatibleError: no CUDA device, or a GPU the engine does not target; the message ends
            with the engine's deployment target (:func:`deployment_target`).
    """
    if device is not None and not isinstance(device, int) and torch.device(device).type != "cuda":
        resolve_device(device)  # raises the "CUDA devices only" error, with or without a GPU here
    meta = metadata or _default_metadata()
    if not torch.cuda.is_available():
        reason: str | None = str(gpu_unavailable_reason(meta))
        dev = None
    else:
        dev = resolve_device(device)
        gpu = GpuInfo.of(dev)
        reason = incompatibility_reason(meta, gpu) if gpu is not None else None
    if reason is not None or dev is None:
        raise EngineIncompatibleError(
            f"{where} cannot run here: {reason}. It is a {deployment_target(meta)} Run it on a GPU it "
            "targets, or rebuild it there (BuildOptions(compute_capabilities=...) for TensorRT-RTX)."
        )
    return dev


@dataclass
class _Owner:
    """TensorRT objects the engine must not outlive: the runtime that made it, and its logger."""

    runtime: Any = None
    logger: Any = None


class Engine:
    """A deserialized engine with one execution context, callable on torch CUDA tensors.

    Not thread-safe: one call at a time per Engine (create one Engine per thread or stream).
    """

    def __init__(
        self,
        cuda_engine: Any,
        metadata: Mapping[str, Any] | None = None,
        path: Path | None = None,
        device: DeviceLike = None,
        options: RuntimeOptions | None = None,
        owner: _Owner | None = None,
    ) -> None:
        self._engine = cuda_engine
        self._owner = owner or _Owner()
        self.metadata = dict(metadata or {})
        self.path = path
        self.device = resolve_device(device)
        self.options = options or RuntimeOptions()
        trt = trt_api.get_trt()
        self.bindings = [self._binding(i, trt) for i in range(cuda_engine.num_io_tensors)]
        self._cache_path = self.options.cache_path(path)
        library = f"{trt_api.library_name()} {trt_api.library_version()}"
        with torch.cuda.device(self.device):
            self._context, self._runtime_config, self._runtime_cache = create_context(
                cuda_engine, trt, self.options, self._cache_path, library
            )
        self._stream: torch.cuda.Stream | None = None  # private stream, made on the first default-stream call

    def _binding(self, index: int, trt: Any) -> TensorBinding:
        engine, name = self._engine, self._engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        lo = opt = hi = None
        if is_input and -1 in shape:
            lo, opt, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
        if hasattr(engine, "get_tensor_location") and engine.get_tensor_location(name) == trt.TensorLocation.HOST:
            raise EngineLoadError(
                f"Engine tensor {name!r} is a host (shape) tensor; Engine supports device tensors only"
            )
        return TensorBinding(name, is_input, torch_dtype(engine.get_tensor_dtype(name)), shape, lo, hi, opt)

    @classmethod
    def load(cls, path: str | Path, *, device: DeviceLike = None, options: RuntimeOptions | None = None) -> Engine:
        """Verify and deserialize an engine file written by ``build_engine``/``save_engine``.

        Args:
            path: the engine file (its sidecar ``<path>.json`` must be next to it).
            device: the CUDA device to run on (default: the current one); ``"cpu"`` is an error.
            options: runtime settings (TensorRT-RTX kernel specialization, runtime cache).

        Raises:
            EngineLoadError: the file or sidecar fails a check (see ``load_engine_bytes``), or TensorRT
                cannot deserialize it (a version mismatch, a corrupt plan).
            EngineIncompatibleError: no GPU here, or one the engine does not target (the message states
                the engine's deployment target).

        Example:
            >>> engine = Engine.load("model.plan", device="cuda:0")   # doctest: +SKIP
        """
        data, metadata = load_engine_bytes(path)
        return cls.from_bytes(
            data, metadata, where=f"engine file {path}", device=device, path=Path(path), options=options
        )

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        metadata: Mapping[str, Any] | None = None,
        *,
        where: str = "the engine",
        device: DeviceLike = None,
        path: Path | None = None,
        options: RuntimeOptions | None = None,
    ) -> Engine:
        """Deserialize engine bytes (prefer :meth:`load`, which checks them first)."""
        dev = check_runs_here(metadata or _default_metadata(data), device, where)
        trt = trt_api.get_trt()
        owner = _Owner(None, make_logger("WARNING"))
        owner.runtime = trt.Runtime(owner.logger)
        torch.cuda.init()  # TensorRT then shares torch's primary CUDA context on this device
        with torch.cuda.device(dev):
            cuda_engine = owner.runtime.deserialize_cuda_engine(data)
        if cuda_engine is None:
            errors = owner.logger.errors()
            raise EngineLoadError(
                f"TensorRT ({trt_api.library_name()} {trt_api.library_version()}) could not deserialize {where} on "
                f"{GpuInfo.of(dev)}, a GPU the engine targets: the plan is corrupt or was built by another "
                "library version. Rebuild it with this version."
                + _validity_diagnostics(owner.runtime, data, trt)
                + (" TensorRT said: " + " | ".join(errors) if errors else "")
            )
        return cls(cuda_engine, metadata, path, dev, options, owner)

    @property
    def input_names(self) -> list[str]:
        """Engine inputs in binding order (the order positional arguments take)."""
        return [b.name for b in self.bindings if b.is_input]

    @property
    def output_names(self) -> list[str]:
        """Engine outputs in binding order."""
        return [b.name for b in self.bindings if not b.is_input]

    def __repr__(self) -> str:
        where = self.path or "bytes"
        return f"Engine({where}, inputs={self.input_names}, outputs={self.output_names}, {self.device})"

    def _feeds(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        names = self.input_names
        if len(args) > len(names):
            raise EngineInputError(f"Engine takes {len(names)} input(s) {names}, got {len(args)} positional")
        feeds = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise EngineInputError(f"Engine has no input {key!r}; inputs are {names}")
            if key in feeds:
                raise EngineInputError(f"Engine input {key!r} given both by position and by name")
            feeds[key] = value
        missing = [n for n in names if n not in feeds]
        if missing:
            raise EngineInputError(f"Engine input(s) {missing} not given; inputs are {names}")
        return feeds

    def _bind_inputs(self, feeds: Mapping[str, Any]) -> list[torch.Tensor]:
        kept = []  # aligned copies must live until the enqueue (the caller's stream then orders their reuse)
        for b in self.bindings:
            if not b.is_input:
                continue
            check_input(b, feeds[b.name], self.device)
            tensor = aligned_tensor(feeds[b.name], b.name)
            kept.append(tensor)
            if b.is_dynamic and not self._context.set_input_shape(b.name, tuple(tensor.shape)):
                raise EngineRuntimeError(f"TensorRT refused shape {tuple(tensor.shape)} for input {b.name!r}")
            bind_address(self._context, b.name, tensor)
        return kept

    def _bind_outputs(self) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        for b in self.bindings:
            if b.is_input:
                continue
            shape = tuple(int(d) for d in self._context.get_tensor_shape(b.name))
            if any(d < 0 for d in shape):
                raise EngineRuntimeError(
                    f"Output {b.name!r} has a data-dependent shape {shape}; Engine does not support outputs "
                    "that need an IOutputAllocator"
                )
            outputs[b.name] = aligned_empty(shape, b.dtype, self.device)
            bind_address(self._context, b.name, outputs[b.name])
        return outputs

    def _private_stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return self._stream

    def _enqueue(self) -> None:
        caller = torch.cuda.current_stream(self.device)
        stream = engine_stream(caller, torch.cuda.default_stream(self.device), self._private_stream)
        logger = self._owner.logger
        since = len(logger.messages) if logger is not None else 0
        if not enqueue_ordered(self._context.execute_async_v3, caller, stream):
            errors = logger.errors(since) if logger is not None else []
            raise EngineRuntimeError(
                "TensorRT failed to enqueue the engine" + (": " + " | ".join(errors) if errors else "")
            )

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Enqueue the engine after the caller's current-stream work and return its outputs by name.

        Inputs go by position (binding order) or by name; they must be CUDA tensors on the engine's
        device with the engine's dtypes and shapes within its profile. Outputs are new CUDA tensors,
        ready for any later work on the caller's current stream (as with any torch op).

        Raises:
            EngineInputError: a wrong, missing or extra input.
            EngineRuntimeError: TensorRT refused a shape, an address or the enqueue.

        Example:
            >>> out = engine(images=batch.cuda())["logits"]   # doctest: +SKIP
        """
        feeds = self._feeds(args, kwargs)
        with torch.cuda.device(self.device):
            kept = self._bind_inputs(feeds)
            outputs = self._bind_outputs()
            self._enqueue()
        del kept
        return outputs

    def warm_up(self, batch_sizes: Sequence[int] = ()) -> float:
        """Run every input shape that timed work will use once, so that JIT compilation is not timed.

        Runs the profile's opt and max shapes (static engines: their one shape) plus, for inputs with a
        dynamic batch dimension, each of ``batch_sizes`` (e.g. a last partial batch). Then saves the
        runtime cache when one is configured.

        Returns:
            Seconds the warm-up took (mostly TensorRT-RTX kernel compilation on a first run).

        Example:
            >>> engine.warm_up(batch_sizes=[3])   # doctest: +SKIP
        """
        start = time.perf_counter()
        for feeds in warm_up_feeds(self.bindings, batch_sizes, self.device):
            self(**feeds)
        torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.save_runtime_cache()
        return seconds

    def save_runtime_cache(self) -> int:
        """Write the TensorRT-RTX runtime cache file (when configured); returns the bytes written."""
        if self._runtime_cache is None or self._cache_path is None:
            return 0
        return save_cache(self._runtime_cache, self._cache_path)


__all__ = [
    "Engine",
    "EngineIncompatibleError",
    "EngineInputError",
    "RuntimeOptions",
    "TensorBinding",
    "check_input",
    "check_runs_here",
    "gpu_unavailable_reason",
    "resolve_device",
    "warm_up_feeds",
]
