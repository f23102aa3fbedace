"""Run a serialized engine on torch CUDA tensors.

``Engine.load(path)`` verifies the file with :func:`~fx2trt_pipeline.engine.artifact.load_engine_bytes`
(size, sha256, the library that built it and its version, header), then deserializes it with that
library (:mod:`~fx2trt_pipeline.engine.loading`: TensorRT-RTX's runtime is asked whether this GPU and
driver can run the plan; an unsupported GPU raises :class:`EngineIncompatibleError` with the engine's
deployment target) and creates an execution context with a runtime config (TensorRT-RTX: kernel
specialization strategy, optional runtime cache; see :mod:`~fx2trt_pipeline.engine.runtime_config`).

``engine(x)`` or ``engine(images=x)`` checks each input against the engine (device, dtype, rank, static
dims, profile range) with one clear error, binds it by address (256-byte aligned: an unaligned view is
copied, nothing is cast), sets the shapes of dynamic inputs, allocates the outputs at the shapes
TensorRT infers and enqueues the engine without any host synchronisation: on the caller's stream, or
on a private stream ordered with the caller's default stream (:mod:`~fx2trt_pipeline.engine.streams`).
One execution context serves one call at a time: calls from several threads are serialized, and a
call on another stream than the previous one waits for it (the context's activation memory is shared).
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

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import load_engine_bytes
from fx2trt_pipeline.engine.bindings import (
    TensorBinding,
    aligned_empty,
    aligned_tensor,
    bind_address,
    check_input,
    output_shapes,
    warm_up_feeds,
)
from fx2trt_pipeline.engine.compatibility import gpu_unavailable_reason
from fx2trt_pipeline.engine.loading import DeviceLike, Owner, check_runs_here, deserialize, resolve_device
from fx2trt_pipeline.engine.runtime_config import RuntimeOptions, create_context, save_cache
from fx2trt_pipeline.engine.streams import engine_stream, enqueue_ordered
from fx2trt_pipeline.errors import (
    EngineIncompatibleError,
    EngineInputError,
    EngineLoadError,
    EngineRuntimeError,
)
from fx2trt_pipeline.trt_types import torch_dtype


class Engine:
    """A deserialized engine with one execution context, callable on torch CUDA tensors.

    Calls are serialized (one execution context runs one enqueue at a time, see the module docstring);
    for concurrent inference create one Engine per thread or stream.
    """

    def __init__(
        self,
        cuda_engine: Any,
        metadata: Mapping[str, Any] | None = None,
        path: Path | None = None,
        device: DeviceLike = None,
        options: RuntimeOptions | None = None,
        owner: Owner | None = None,
    ) -> None:
        self._engine = cuda_engine
        self.metadata = dict(metadata or {})
        library = self.metadata.get("library")
        name = library.get("name") if isinstance(library, Mapping) else None
        self._owner = owner or Owner(library=str(name or trt_api.library_name()))
        #: The library that runs this engine (the one that built it), e.g. ``"tensorrt_rtx"``.
        self.library = self._owner.library
        self.path = path
        self.device = resolve_device(device)
        self.options = options or RuntimeOptions()
        self._trt = trt_api.get_trt(self.library)
        self.bindings = [self._binding(i, self._trt) for i in range(cuda_engine.num_io_tensors)]
        self._cache_path = self.options.cache_path(path)
        with torch.cuda.device(self.device):
            self._context, self._runtime_config, self._runtime_cache = create_context(
                cuda_engine,
                self._trt,
                self.options,
                self._cache_path,
                trt_api.library_label(self.library),
                self._owner.logger,
            )
        self._stream: torch.cuda.Stream | None = None  # private stream, made on the first default-stream call
        self._lock = threading.Lock()  # the context's shapes, addresses and activations serve one call
        self._last_stream: Any = None  # the stream of the previous enqueue, which the next one follows
        self._warmed: list[dict[str, tuple[int, ...]]] = []

    def _binding(self, index: int, trt: Any) -> TensorBinding:
        engine, name = self._engine, self._engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        lo = opt = hi = None
        if is_input and -1 in shape:
            lo, opt, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
        if engine.get_tensor_location(name) == trt.TensorLocation.HOST:
            raise EngineLoadError(
                f"Engine tensor {name!r} is a host (shape) tensor; Engine supports device tensors only"
            )
        return TensorBinding(name, is_input, torch_dtype(engine.get_tensor_dtype(name)), shape, lo, hi, opt)

    @classmethod
    def load(cls, path: str | Path, *, device: DeviceLike = None, options: RuntimeOptions | None = None) -> Engine:
        """Verify and deserialize an engine file written by ``build_engine``/``save_engine``.

        The engine loads with the library its sidecar names (TensorRT or TensorRT-RTX), whichever
        library builds use here.

        Args:
            path: the engine file (its sidecar ``<path>.json`` must be next to it).
            device: the CUDA device to run on (default: the current one); ``"cpu"`` is an error.
            options: runtime settings (TensorRT-RTX kernel specialization, runtime cache).

        Raises:
            EngineLoadError: the file or sidecar fails a check (see ``load_engine_bytes``), or TensorRT
                cannot deserialize it (a version mismatch, a corrupt plan).
            EngineIncompatibleError: no GPU here, the engine's library is not installed, or a GPU or driver
                the engine cannot run on (the message states the engine's deployment target).

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
        cuda_engine, meta, dev, owner = deserialize(data, metadata, where, device)
        return cls(cuda_engine, meta, path, dev, options, owner)

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

    def _errors_since(self, since: int) -> Callable[[], list[str]]:
        logger = self._owner.logger
        return lambda: logger.errors(since) if logger is not None else []

    def _bind_outputs(self, inputs: Mapping[str, torch.Tensor], since: int) -> dict[str, torch.Tensor]:
        shapes = {n: tuple(t.shape) for n, t in inputs.items()}
        outputs: dict[str, torch.Tensor] = {}
        for name, shape in output_shapes(self._context, self.bindings, shapes, self._errors_since(since)).items():
            dtype = next(b.dtype for b in self.bindings if b.name == name)
            outputs[name] = aligned_empty(shape, dtype, self.device)
            bind_address(self._context, name, outputs[name])
        return outputs

    def _private_stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return self._stream

    def _enqueue(self, since: int) -> None:
        caller = torch.cuda.current_stream(self.device)
        stream = engine_stream(caller, torch.cuda.default_stream(self.device), self._private_stream)
        previous, self._last_stream = self._last_stream, stream
        if not enqueue_ordered(self._context.execute_async_v3, caller, stream, previous):
            errors = self._errors_since(since)()
            raise EngineRuntimeError(
                "TensorRT failed to enqueue the engine" + (": " + " | ".join(errors) if errors else "")
            )

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Enqueue the engine after the caller's current-stream work and return its outputs by name.

        Inputs go by position (binding order) or by name; they must be CUDA tensors on the engine's
        device with the engine's dtypes and shapes within its profile. Outputs are new CUDA tensors,
        ready for any later work on the caller's current stream (as with any torch op). Calls from
        several threads run one after another.

        Raises:
            EngineInputError: a wrong, missing or extra input.
            EngineRuntimeError: TensorRT refused a shape or an address, shape inference failed, an
                output's shape depends on the data, or the enqueue failed (quoting TensorRT).

        Example:
            >>> out = engine(images=batch.cuda())["logits"]   # doctest: +SKIP
        """
        feeds = self._feeds(args, kwargs)
        # One context: binding shapes and addresses and enqueueing must not interleave with another call.
        with self._lock, torch.cuda.device(self.device):
            logger = self._owner.logger
            since = len(logger.messages) if logger is not None else 0
            kept = self._bind_inputs(feeds)
            outputs = self._bind_outputs(dict(zip(self.input_names, kept)), since)
            self._enqueue(since)
        del kept
        return outputs

    def warm_up(self, batch_sizes: Sequence[int] = ()) -> float:
        """Run every input shape that timed work will use once, so that JIT compilation is not timed.

        Runs the profile's opt and max shapes (static engines: their one shape) plus, for inputs with a
        dynamic batch dimension, each of ``batch_sizes`` (e.g. a last partial batch); shapes warmed up
        before are not run again. Then saves the runtime cache when one is configured.

        Returns:
            Seconds the warm-up took (mostly TensorRT-RTX kernel compilation on a first run).

        Example:
            >>> engine.warm_up(batch_sizes=[3])   # doctest: +SKIP
        """
        start = time.perf_counter()
        for feeds in warm_up_feeds(self.bindings, batch_sizes, self.device):
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            if shapes not in self._warmed:
                self(**feeds)
                self._warmed.append(shapes)
        torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.save_runtime_cache()
        return seconds

    @property
    def warmed_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """Input shapes run by :meth:`warm_up` so far (each compiled before any timed call)."""
        return list(self._warmed)

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
