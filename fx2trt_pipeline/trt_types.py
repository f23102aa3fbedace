"""TensorRT basics every stage shares: the torch <-> TensorRT dtype table and the recording logger.

The TensorRT module itself comes from :mod:`fx2trt_pipeline.trt_api` (the one module that imports
it); this module only names things, so it imports without TensorRT.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.trt_types import dtype_name, torch_dtype_from_name
    >>> torch_dtype_from_name("int8")
    torch.int8
    >>> dtype_name(torch.float16)
    'float16'
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConversionError

#: TensorRT ``DataType`` member names -> torch dtypes (TensorRT's FP8 is E4M3). The one table.
TRT_TO_TORCH: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "FP8": torch.float8_e4m3fn,
}
TORCH_TO_TRT: dict[torch.dtype, str] = {v: k for k, v in TRT_TO_TORCH.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """torch-style name of a torch dtype (``torch.float32`` -> ``"float32"``), used in sidecars and specs."""
    return str(dtype).removeprefix("torch.")


def torch_dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (``"float32"`` -> ``torch.float32``).

    Raises:
        ConversionError: ``name`` is no torch dtype that TensorRT has.
    """
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or dtype not in TORCH_TO_TRT:
        raise ConversionError(
            f"dtype {name!r} has no TensorRT equivalent; use one of {sorted(dtype_name(d) for d in TORCH_TO_TRT)}"
        )
    return dtype


def torch_dtype(trt_dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (raises ConversionError for INT4/FP4/E8M0)."""
    name = getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    if name not in TRT_TO_TORCH:
        raise ConversionError(f"TensorRT DataType.{name} has no torch dtype")
    return TRT_TO_TORCH[name]


def trt_dtype_name(trt_dtype: Any) -> str:
    """torch-style name of a TensorRT ``DataType`` (``DataType.FLOAT`` -> ``"float32"``)."""
    return dtype_name(torch_dtype(trt_dtype))


def trt_dtype(dtype: torch.dtype) -> Any:
    """The TensorRT ``DataType`` of a torch dtype (needs the library)."""
    if dtype not in TORCH_TO_TRT:
        raise ConversionError(f"TensorRT has no data type for torch {dtype}")
    return getattr(trt_api.get_trt().DataType, TORCH_TO_TRT[dtype])


# -- logger -----------------------------------------------------------------------------------------

_LOG = logging.getLogger("fx2trt_pipeline.tensorrt")
#: Messages that say nothing about the network being built. The second one appears whenever two
#: builders coexist; measured: each builder's own messages still reach its own logger.
_BENIGN = ("Thread context has not been set", "differs from one already registered")
#: On a machine without a GPU every TensorRT-RTX call logs this CUDA error; the AOT builder needs no GPU.
_NO_GPU_NOISE = "cudaError 35"
_PY_LEVELS = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "VERBOSE": logging.DEBUG,
}


def _is_noise(msg: str, no_gpu: bool) -> bool:
    return any(b in msg for b in _BENIGN) or (no_gpu and _NO_GPU_NOISE in msg)


@functools.cache
def _logger_class(library: str) -> type:
    # Defined on first use, once per library: subclassing trt.ILogger needs the library (a logger of one
    # library cannot be handed to the other), and importing this module must not.
    trt = trt_api.get_trt(library)

    class CapturingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        """A TensorRT logger that keeps every message (for error reports) and forwards it to ``logging``."""

        def __init__(self, min_severity: str = "INFO", error_sink: list[str] | None = None) -> None:
            trt.ILogger.__init__(self)
            self.min_level = int(getattr(trt.ILogger.Severity, min_severity))
            self.messages: list[tuple[str, str]] = []
            self.no_gpu = not torch.cuda.is_available()
            self.error_sink = error_sink

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) > self.min_level:
                return
            name = str(severity).split(".")[-1]
            self.messages.append((name, msg))
            noise = _is_noise(msg, self.no_gpu)
            if self.error_sink is not None and name in ("ERROR", "INTERNAL_ERROR") and not noise:
                self.error_sink.append(msg)
            _LOG.log(logging.DEBUG if noise else _PY_LEVELS.get(name, logging.INFO), "%s", msg)

        def errors(self, since: int = 0) -> list[str]:
            """Error-severity messages logged after index ``since`` (known noise removed)."""
            return [
                m
                for sev, m in self.messages[since:]
                if sev in ("ERROR", "INTERNAL_ERROR") and not _is_noise(m, self.no_gpu)
            ]

    return CapturingLogger


def make_logger(min_severity: str = "INFO", error_sink: list[str] | None = None, library: str | None = None) -> Any:
    """A ``trt.ILogger`` that records messages (``.messages``, ``.errors()``) and forwards them to logging.

    Pass it to ``trt.Builder(logger)`` so that build and conversion errors can quote TensorRT's own
    messages; ``error_sink`` also receives every error message as it arrives. ``library`` is the
    library whose objects get the logger (default: the build library, :func:`trt_api.library_name`).

    Example:
        >>> from fx2trt_pipeline import trt_api
        >>> logger = make_logger()
        >>> builder = trt_api.get_trt().Builder(logger) if trt_api.is_available() else None
        >>> logger.errors()
        []
    """
    return _logger_class(trt_api.library_name(library))(min_severity, error_sink)


__all__ = [
    "TORCH_TO_TRT",
    "TRT_TO_TORCH",
    "dtype_name",
    "make_logger",
    "torch_dtype",
    "torch_dtype_from_name",
    "trt_dtype",
    "trt_dtype_name",
]
