"""Engine I/O tensors: what the engine expects, the checks on what it is given, and binding by address.

TensorRT reads and writes engine I/O through raw device pointers, and requires each to be aligned to
256 bytes. A torch view with an offset (``x[1:]``, a channel slice) can be contiguous and still start at
an unaligned address, so ``.contiguous()`` is not enough: :func:`aligned_tensor` copies such inputs into
a fresh aligned buffer. ``set_tensor_address`` returns False when TensorRT refuses a pointer;
:func:`bind_address` turns that into an error that names the tensor.

Example:
    >>> import torch
    >>> b = TensorBinding("x", True, torch.float32, (-1, 3), (1, 3), (8, 3))
    >>> check_input(b, torch.zeros(4, 3))
    >>> base = torch.zeros(64)
    >>> view = base[1:9]                      # 4 bytes past base: never 256-byte aligned
    >>> copy = aligned_tensor(view, "x")
    >>> copy.data_ptr() % ALIGNMENT, torch.equal(copy, view)
    (0, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline.errors import ConversionError, EngineInputError, EngineLoadError, EngineRuntimeError
from fx2trt_pipeline.trt_types import torch_dtype_from_name

#: Byte alignment TensorRT requires of every I/O device pointer.
ALIGNMENT = 256


@dataclass(frozen=True)
class TensorBinding:
    """One engine I/O tensor: name, direction, dtype, shape (``-1`` dynamic) and profile range."""

    name: str
    is_input: bool
    dtype: torch.dtype
    shape: tuple[int, ...]
    min_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None

    @property
    def is_dynamic(self) -> bool:
        """True when any dimension is only known at run time."""
        return -1 in self.shape

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> list[TensorBinding]:
        """Bindings as recorded in an engine sidecar (inputs first), e.g. to check inputs early."""
        out = []
        for d in metadata.get("inputs", []):
            lo, opt, hi = (tuple(d[k]) if d.get(k) else None for k in ("min_shape", "opt_shape", "max_shape"))
            out.append(cls(d["name"], True, _sidecar_dtype(d), tuple(d["shape"]), lo, hi, opt))
        for d in metadata.get("outputs", []):
            out.append(cls(d["name"], False, _sidecar_dtype(d), tuple(d["shape"])))
        return out


def _sidecar_dtype(entry: Mapping[str, Any]) -> torch.dtype:
    # A sidecar dtype no engine can have means a corrupt or foreign sidecar: a load error, not a conversion one.
    try:
        return torch_dtype_from_name(entry["dtype"])
    except ConversionError as exc:
        raise EngineLoadError(f"Engine sidecar tensor {entry.get('name')!r}: {exc}") from None


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
        raise EngineInputError(f"{where} must have {len(binding.shape)} dims {binding.shape}, got shape {shape}")
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


def is_aligned(tensor: torch.Tensor) -> bool:
    """True when the tensor's first element sits on a 256-byte boundary (empty tensors always are)."""
    return tensor.numel() == 0 or tensor.data_ptr() % ALIGNMENT == 0


def aligned_empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised contiguous tensor whose data starts on a 256-byte boundary, on any allocator.

    CUDA's caching allocator returns 512-byte aligned blocks, so this is a plain ``torch.empty`` there;
    where an allocator does not (the CPU's, a pluggable one) the buffer is over-allocated and sliced
    at the first boundary.
    """
    tensor = torch.empty(shape, dtype=dtype, device=device)
    if is_aligned(tensor):
        return tensor
    size = tensor.element_size()
    if ALIGNMENT % size:
        raise EngineInputError(f"dtype {dtype} ({size} bytes) cannot be laid out on {ALIGNMENT}-byte boundaries")
    buffer = torch.empty(tensor.numel() + ALIGNMENT // size, dtype=dtype, device=device)
    skip = (-buffer.data_ptr() % ALIGNMENT) // size
    return buffer[skip : skip + tensor.numel()].view(shape)


def aligned_tensor(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """``tensor`` itself when it is contiguous and 256-byte aligned, else an aligned contiguous copy.

    Raises:
        EngineInputError: the copy could not be aligned (naming the input ``name``).
    """
    if tensor.is_contiguous() and is_aligned(tensor):
        return tensor
    copy = aligned_empty(tuple(tensor.shape), tensor.dtype, tensor.device)
    copy.copy_(tensor)
    if not is_aligned(copy):
        raise EngineInputError(f"Engine input {name!r}: could not place a copy on a {ALIGNMENT}-byte boundary")
    return copy


def bind_address(context: Any, name: str, tensor: torch.Tensor) -> None:
    """``context.set_tensor_address(name, ptr)``, checked: alignment first, then TensorRT's answer.

    Raises:
        EngineRuntimeError: the pointer is unaligned or TensorRT refused it; the message names the tensor.
    """
    ptr = tensor.data_ptr()
    if not is_aligned(tensor):
        raise EngineRuntimeError(
            f"Engine tensor {name!r} is at address 0x{ptr:x}, not {ALIGNMENT}-byte aligned as TensorRT requires"
        )
    if not context.set_tensor_address(name, ptr):
        raise EngineRuntimeError(
            f"TensorRT refused the address 0x{ptr:x} of engine tensor {name!r} (set_tensor_address returned "
            "False): is the name an I/O tensor of this engine and the memory on the engine's device?"
        )


def _said(errors: Sequence[str]) -> str:
    return (". TensorRT said: " + " | ".join(errors)) if errors else ""


def output_shapes(
    context: Any, bindings: Sequence[TensorBinding], inputs: Mapping[str, Any], errors: Callable[[], list[str]]
) -> dict[str, tuple[int, ...]]:
    """The output shapes TensorRT infers from the bound input shapes, by output name.

    A failed shape inference (TensorRT refused the input shapes, or an output's shape could not be
    computed) and an output whose shape depends on the data (``-1`` after a successful inference) are
    different problems with different remedies; each gets its own error.

    Args:
        context: the execution context, input shapes and addresses already set.
        bindings: the engine's bindings (outputs are read).
        inputs: the shapes given, by input name (for the message).
        errors: TensorRT's error messages logged since the inputs were bound.

    Raises:
        EngineRuntimeError: naming the tensor and quoting TensorRT.
    """
    given = ", ".join(f"{k} {tuple(v)}" for k, v in inputs.items())
    try:
        missing = list(context.infer_shapes())
    except Exception as exc:  # RuntimeError: inference failed for a reason other than a missing input shape
        raise EngineRuntimeError(f"TensorRT's shape inference failed for inputs {given}: {exc}{_said(errors())}")
    if missing:
        raise EngineRuntimeError(
            f"TensorRT's shape inference failed for inputs {given}: {missing} not fully specified{_said(errors())}"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for b in bindings:
        if b.is_input:
            continue
        try:
            shape = tuple(int(d) for d in context.get_tensor_shape(b.name))
        except Exception as exc:  # Dims with nbDims = -1 (inference failed for this tensor)
            shape, why = (), f" ({exc})"
        else:
            why = ""
        if len(shape) != len(b.shape):
            raise EngineRuntimeError(
                f"TensorRT's shape inference failed for output {b.name!r} with inputs {given}: got {shape}{why}, "
                f"expected {len(b.shape)} dims{_said(errors())}"
            )
        if any(d < 0 for d in shape):
            raise EngineRuntimeError(
                f"Output {b.name!r} has a data-dependent shape {shape} (inputs {given}); Engine does not "
                "support outputs that need an IOutputAllocator"
            )
        shapes[b.name] = shape
    return shapes


def warm_up_feeds(
    bindings: Sequence[TensorBinding], batch_sizes: Sequence[int], device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """Zero inputs at each distinct shape :meth:`Engine.warm_up` runs (opt, max, then ``batch_sizes``).

    Example:
        >>> b = TensorBinding("x", True, torch.float32, (-1, 3), (1, 3), (8, 3), (4, 3))
        >>> [f["x"].shape[0] for f in warm_up_feeds([b], [3, 4], torch.device("cpu"))]
        [4, 8, 3]
    """
    inputs = [b for b in bindings if b.is_input]
    runs: list[dict[str, tuple[int, ...]]] = [
        {b.name: (b.opt_shape or b.shape) if b.is_dynamic else b.shape for b in inputs},
        {b.name: (b.max_shape or b.shape) if b.is_dynamic else b.shape for b in inputs},
    ]
    for n in batch_sizes:
        run = dict(runs[0])
        for b in inputs:
            if b.is_dynamic and b.shape[0] == -1 and b.min_shape and b.max_shape:
                run[b.name] = (max(b.min_shape[0], min(int(n), b.max_shape[0])), *run[b.name][1:])
        runs.append(run)
    distinct = [r for i, r in enumerate(runs) if r not in runs[:i]]
    dtypes = {b.name: b.dtype for b in inputs}
    return [{k: torch.zeros(s, dtype=dtypes[k], device=device) for k, s in r.items()} for r in distinct]


__all__ = [
    "ALIGNMENT",
    "TensorBinding",
    "aligned_empty",
    "aligned_tensor",
    "bind_address",
    "check_input",
    "is_aligned",
    "output_shapes",
    "warm_up_feeds",
]
