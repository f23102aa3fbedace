"""The one place that imports TensorRT.

Resolves the TensorRT Python API at import time: datacenter ``tensorrt`` when it is importable,
otherwise TensorRT-RTX (``tensorrt_rtx_libs`` loads the shared libraries, ``tensorrt_rtx_bindings``
is the API). Every other module uses :func:`get_trt` and never imports tensorrt itself, so the
pipeline runs unchanged on either library.

Example:
    >>> from fx2trt_pipeline import trt_api
    >>> if trt_api.is_available():  # either library exposes the same API
    ...     trt = trt_api.get_trt()
    ...     assert trt_api.library_name() in ("tensorrt", "tensorrt_rtx") and trt_api.library_version()
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fx2trt_pipeline.errors import TensorRTUnavailableError

_TRT: ModuleType | None = None
_NAME: str | None = None
_IMPORT_ERRORS: list[str] = []


def _resolve() -> None:
    global _TRT, _NAME
    try:
        _TRT = importlib.import_module("tensorrt")
        _NAME = "tensorrt"
        return
    except Exception as exc:  # the PyPI stub raises at import, not only ImportError
        _IMPORT_ERRORS.append(f"tensorrt: {exc.__class__.__name__}: {exc}")
    try:
        importlib.import_module("tensorrt_rtx_libs")  # loads libtensorrt_rtx*.so before the bindings
        _TRT = importlib.import_module("tensorrt_rtx_bindings")
        _NAME = "tensorrt_rtx"
    except Exception as exc:
        _IMPORT_ERRORS.append(f"tensorrt_rtx: {exc.__class__.__name__}: {exc}")


_resolve()


def is_available() -> bool:
    """True when TensorRT or TensorRT-RTX imported."""
    return _TRT is not None


def get_trt() -> ModuleType:
    """The TensorRT module in use.

    Raises:
        TensorRTUnavailableError: neither library imports; the message says how to install one.
    """
    if _TRT is None:
        raise TensorRTUnavailableError(
            "No TensorRT library could be imported (" + "; ".join(_IMPORT_ERRORS) + "). Install TensorRT-RTX "
            "with `pip install 'fx2trt-pipeline[rtx]'` or NVIDIA TensorRT on a GPU host."
        )
    return _TRT


def library_name() -> str:
    """``"tensorrt"`` or ``"tensorrt_rtx"`` (raises when neither is installed)."""
    get_trt()
    return str(_NAME)


def library_version() -> str:
    """Version string of the library in use, e.g. ``"1.7.1.116"``."""
    return str(get_trt().__version__)
