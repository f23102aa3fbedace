"""Run a serialized engine on torch CUDA tensors.

``Engine.load(path)`` verifies the file with :func:`~fx2trt_pipeline.engine.artifact.load_engine_bytes`
(size, sha256, library version, header) before TensorRT sees a byte, then deserializes it.
``engine(x)`` or ``engine(images=x)`` binds torch CUDA tensors by address, sets the shapes of dynamic
inputs, allocates the outputs at the shapes TensorRT infers, and enqueues the engine on
``torch.cuda.current_stream()``: no host copies and no synchronisation, so it composes with other
torch work on that stream. Inputs are checked against the engine (dtype, rank, static dims, profile
range) with one clear error; nothing is cast or copied behind the user's back.

TensorRT-RTX engines run on the GPUs they target (Ampere, Ada, Blackwell; Turing when asked for);
it refuses Hopper (H100/H200, compute capability 9.0). :func:`gpu_unavailable_reason` says why engines
cannot run in this process, which is also what GPU tests skip with.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.engine.runtime import Engine
    >>> engine = Engine.load("resnet18_int8.plan")                # doctest: +SKIP
    >>> out = engine(torch.randn(8, 3, 224, 224, device="cuda"))  # doctest: +SKIP
    >>> out["logits"].shape                                       # doctest: +SKIP
    torch.Size([8, 1000])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import load_engine_bytes
from fx2trt_pipeline.errors import EngineInputError, EngineLoadError, EngineRuntimeError
from fx2trt_pipeline.trt_types import make_logger, torch_dtype, torch_dtype_from_name


#: Compute capabilities a default TensorRT-RTX build targets (its header mask 0x7e).
_RTX_DEFAULT_TARGETS = ("SM80", "SM86", "SM89", "SM120", "SM121", "later")


def gpu_unavailable_reason(metadata: Mapping[str, Any] | None = None) -> str | None:
    """Why engines cannot run in this process, or ``None`` when they should.

    Args:
        metadata: an engine's sidecar; its ``target_compute_capabilities`` refine the answer.

    Example:
        >>> reason = gpu_unavailable_reason()
        >>> reason is None or isinstance(reason, str)
        True
    """
    if not trt_api.is_available():
        return "no TensorRT library is installed (pip install 'fx2trt-pipeline[rtx]')"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (torch.cuda.is_available() is False)"
    if trt_api.library_name() != "tensorrt_rtx":
        return None
    major, minor = torch.cuda.get_device_capability()
    name = f"SM{major}{minor}"
    targets = list((metadata or {}).get("target_compute_capabilities") or _RTX_DEFAULT_TARGETS)
    if name in targets or ("later" in targets and (major, minor) > (12, 1)):
        return None
    device = torch.cuda.get_device_name()
    hopper = " TensorRT-RTX does not support Hopper (9.0) at all." if major == 9 else ""
    return (
        f"the CUDA device ({device}) has compute capability {major}.{minor}, which the TensorRT-RTX engine "
        f"does not target (targets: {targets}).{hopper} Run on an Ampere/Ada/Blackwell GPU, or rebuild with "
        "BuildOptions(compute_capabilities=...) naming this GPU."
    )


@dataclass(frozen=True)
class TensorBinding:
    """One engine I/O tensor: name, direction, dtype, shape (``-1`` dynamic) and profile range."""

    name: str
    is_input: bool
    dtype: torch.dtype
    shape: tuple[int, ...]
    min_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None

    @property
    def is_dynamic(self) -> bool:
        """True when any dimension is only known at run time."""
        return -1 in self.shape

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> list[TensorBinding]:
        """Bindings as recorded in an engine sidecar (inputs first), e.g. to check inputs early."""
        out = []
        for d in metadata.get("inputs", []):
            lo, hi = d.get("min_shape"), d.get("max_shape")
            out.append(
                cls(
                    d["name"],
                    True,
                    torch_dtype_from_name(d["dtype"]),
                    tuple(d["shape"]),
                    tuple(lo) if lo else None,
                    tuple(hi) if hi else None,
                )
            )
        for d in metadata.get("outputs", []):
            out.append(cls(d["name"], False, torch_dtype_from_name(d["dtype"]), tuple(d["shape"])))
        return out


def check_input(binding: TensorBinding, tensor: Any, device: torch.device | None = None) -> None:
    """Raise :class:`EngineInputError` unless ``tensor`` fits the engine input ``binding``.

    Example:
        >>> b = TensorBinding("x", True, torch.float32, (-1, 3), (1, 3), (8, 3))
        >>> check_input(b, torch.zeros(4, 3))        # fits
        >>> check_input(b, torch.zeros(9, 3))        # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        EngineInputError: ...
    """
    where = f"Engine input {binding.name!r}"
    if not isinstance(tensor, torch.Tensor):
        raise EngineInputError(f"{where}: expected a torch.Tensor, got {type(tensor).__name__}")
    if device is not None and tensor.device != device:
        raise EngineInputError(
            f"{where} is on {tensor.device}, the engine runs on {device}; move it with "
            f".to('{device}') (the engine reads device memory directly)"
        )
    if tensor.dtype != binding.dtype:
        raise EngineInputError(
            f"{where} must be {binding.dtype}, got {tensor.dtype}; cast it explicitly "
            "(the engine does not convert dtypes)"
        )
    shape = tuple(tensor.shape)
    if len(shape) != len(binding.shape):
        raise EngineInputError(
            f"{where} must have {len(binding.shape)} dims {binding.shape}, got shape {shape}"
        )
    for axis, (got, want) in enumerate(zip(shape, binding.shape)):
        if want != -1 and got != want:
            raise EngineInputError(
                f"{where}: dim {axis} must be {want} (engine shape {binding.shape}), got shape {shape}"
            )
    if binding.is_dynamic and binding.min_shape and binding.max_shape:
        if any(not lo <= got <= hi for got, lo, hi in zip(shape, binding.min_shape, binding.max_shape)):
            raise EngineInputError(
                f"{where}: shape {shape} is outside the engine's optimization profile "
                f"min {binding.min_shape} .. max {binding.max_shape}; rebuild with a wider "
                "InputSpec range to accept it"
            )


def _validity_diagnostics(runtime: Any, data: bytes, trt: Any) -> str:
    # TensorRT-RTX can say why a plan is invalid for this GPU without deserializing it.
    if not hasattr(runtime, "get_engine_validity") or not hasattr(trt, "EngineInvalidityDiagnostics"):
        return ""
    try:
        validity, flags = runtime.get_engine_validity(data)
    except Exception:  # a diagnostic must never hide the real error
        return ""
    names = [n for n, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(flags) & int(v)]
    return f" TensorRT's engine validity check: {str(validity).split('.')[-1]}" + (
        f" {names}." if names else "."
    )


class Engine:
    """A deserialized engine with one execution context, callable on torch CUDA tensors.

    Not thread-safe: one call at a time per Engine (create one Engine per thread or stream).
    """

    def __init__(
        self,
        cuda_engine: Any,
        metadata: Mapping[str, Any] | None = None,
        path: Path | None = None,
        device: torch.device | None = None,
        runtime: Any = None,
        logger: Any = None,
    ) -> None:
        self._engine = cuda_engine
        self._runtime, self._logger = runtime, logger  # the engine must not outlive its runtime
        self.metadata = dict(metadata or {})
        self.path = path
        self.device = device if device is not None else torch.device("cuda", torch.cuda.current_device())
        trt = trt_api.get_trt()
        self.bindings = [self._binding(i, trt) for i in range(cuda_engine.num_io_tensors)]
        with torch.cuda.device(self.device):
            self._context = cuda_engine.create_execution_context()
        if self._context is None:
            raise EngineLoadError(
                f"TensorRT could not create an execution context for {path or 'the engine'} "
                "(usually: not enough free GPU memory for its activations)"
            )

    def _binding(self, index: int, trt: Any) -> TensorBinding:
        engine, name = self._engine, self._engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        lo = hi = None
        if is_input and -1 in shape:
            lo, _, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
        if (
            hasattr(engine, "get_tensor_location")
            and engine.get_tensor_location(name) == trt.TensorLocation.HOST
        ):
            raise EngineLoadError(
                f"Engine tensor {name!r} is a host (shape) tensor; Engine supports device tensors only"
            )
        return TensorBinding(
            name, is_input, torch_dtype(engine.get_tensor_dtype(name)), shape, lo, hi
        )

    @classmethod
    def load(cls, path: str | Path, *, device: int | str | torch.device | None = None) -> Engine:
        """Verify and deserialize an engine file written by ``build_engine``/``save_engine``.

        Raises:
            EngineLoadError: the file or sidecar fails a check (see ``load_engine_bytes``), or TensorRT
                cannot deserialize it here (no GPU, unsupported compute capability, version mismatch).

        Example:
            >>> engine = Engine.load("model.plan", device="cuda:0")   # doctest: +SKIP
        """
        data, metadata = load_engine_bytes(path)
        return cls.from_bytes(data, metadata, where=f"engine file {path}", device=device, path=Path(path))

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        metadata: Mapping[str, Any] | None = None,
        *,
        where: str = "the engine",
        device: int | str | torch.device | None = None,
        path: Path | None = None,
    ) -> Engine:
        """Deserialize engine bytes (prefer :meth:`load`, which checks them first)."""
        trt = trt_api.get_trt()
        logger = make_logger("WARNING")
        runtime = trt.Runtime(logger)
        cuda = torch.cuda.is_available()
        dev = torch.device(device if device is not None else "cuda") if cuda else None
        if dev is not None and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev is not None:
            torch.cuda.init()  # TensorRT then shares torch's primary CUDA context on this device
            with torch.cuda.device(dev):
                cuda_engine = runtime.deserialize_cuda_engine(data)
        else:
            cuda_engine = runtime.deserialize_cuda_engine(data)
        if cuda_engine is None:
            reason = gpu_unavailable_reason(metadata)
            errors = logger.errors()
            library = f"{trt_api.library_name()} {trt_api.library_version()}"
            raise EngineLoadError(
                f"TensorRT ({library}) could not deserialize {where}. "
                + (f"Cause: {reason}. " if reason else "")
                + "Usual causes: no CUDA GPU/driver in this process; a GPU whose compute capability the "
                "engine does not target (TensorRT-RTX refuses Hopper sm_90: H100/H200); a TensorRT version "
                "other than the one that built it."
                + _validity_diagnostics(runtime, data, trt)
                + (" TensorRT said: " + " | ".join(errors) if errors else "")
            )
        return cls(cuda_engine, metadata, path, dev, runtime, logger)

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

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Enqueue the engine on the current CUDA stream and return its outputs by name.

        Inputs go by position (binding order) or by name; they must be CUDA tensors on the engine's
        device with the engine's dtypes and shapes within its profile. Outputs are new CUDA tensors,
        ready once the current stream reaches them (as with any torch op).

        Raises:
            EngineInputError: a wrong, missing or extra input.
            EngineRuntimeError: TensorRT refused the shapes or the enqueue.

        Example:
            >>> out = engine(images=batch.cuda())["logits"]   # doctest: +SKIP
        """
        feeds = self._feeds(args, kwargs)
        ctx = self._context
        kept = []  # keeps contiguous copies alive until the enqueue has read their addresses
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            for b in self.bindings:
                if not b.is_input:
                    continue
                check_input(b, feeds[b.name], self.device)
                tensor = feeds[b.name].contiguous()
                kept.append(tensor)
                if b.is_dynamic and not ctx.set_input_shape(b.name, tuple(tensor.shape)):
                    raise EngineRuntimeError(
                        f"TensorRT refused shape {tuple(tensor.shape)} for input {b.name!r}"
                    )
                ctx.set_tensor_address(b.name, tensor.data_ptr())
            outputs: dict[str, torch.Tensor] = {}
            for b in self.bindings:
                if b.is_input:
                    continue
                shape = tuple(int(d) for d in ctx.get_tensor_shape(b.name))
                if any(d < 0 for d in shape):
                    raise EngineRuntimeError(
                        f"Output {b.name!r} has a data-dependent shape {shape}; Engine does "
                        "not support outputs that need an IOutputAllocator"
                    )
                outputs[b.name] = torch.empty(shape, dtype=b.dtype, device=self.device)
                ctx.set_tensor_address(b.name, outputs[b.name].data_ptr())
            since = len(self._logger.messages) if self._logger is not None else 0
            if not ctx.execute_async_v3(stream.cuda_stream):
                errors = self._logger.errors(since) if self._logger is not None else []
                raise EngineRuntimeError(
                    "TensorRT failed to enqueue the engine" + (": " + " | ".join(errors) if errors else "")
                )
        return outputs
