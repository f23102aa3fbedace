"""The one place that imports TensorRT: both libraries, chosen per build and per engine.

Two libraries share one Python API shape: datacenter TensorRT (``tensorrt``: H100, A100, L4, T4, Jetson)
and TensorRT-RTX (``tensorrt_rtx``: ``tensorrt_rtx_libs`` loads the shared libraries,
``tensorrt_rtx_bindings`` is the API). Each loads only its own plans, so the library is a property of
an engine, not of the process:

* **builds** use :func:`library_name` (no argument): the library named by ``FX2TRT_TRT_LIBRARY``
  (``tensorrt`` or ``tensorrt_rtx``) when set, else the only one installed, else datacenter TensorRT
  (the one whose engines run on datacenter GPUs); the build output and the sidecar name it;
* **engines** load with the library their sidecar names (``get_trt(metadata_library)``), whatever the
  build default is, so a TensorRT-RTX plan loads with TensorRT-RTX on an image that has both.

Every other module calls :func:`get_trt` and never imports tensorrt itself. A folder called
``tensorrt`` that imports but is no library (the ``tensorrt-stubs`` wheel's ``.pyi`` files, a PyPI
placeholder) does not count: a library has ``Builder`` and ``Runtime``.

API names that only one library has are listed in :data:`ONLY_IN`; the code that uses them checks for
them first and says which library the branch serves (tests/engine/test_api_conformance.py holds both
to it).

Example:
    >>> from fx2trt_pipeline import trt_api
    >>> if trt_api.is_available():
    ...     trt = trt_api.get_trt()                      # the build library
    ...     assert trt_api.library_name() in trt_api.LIBRARIES and trt_api.library_version()
    ...     assert trt_api.get_trt(trt_api.library_name()) is trt
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from fx2trt_pipeline.errors import ConfigError, TensorRTUnavailableError

#: Library names, in the order a build prefers them when both are installed and nothing is chosen.
LIBRARIES = ("tensorrt", "tensorrt_rtx")
#: Environment variable that chooses the build library (``tensorrt`` or ``tensorrt_rtx``).
ENV_VAR = "FX2TRT_TRT_LIBRARY"
#: ``trt.<Name>`` / ``trt.<Class>.<member>`` that exist in one library only (the key). Every use is guarded
#: (``getattr``/``hasattr``) and commented with the library it serves.
ONLY_IN: dict[str, frozenset[str]] = {
    "tensorrt_rtx": frozenset(
        {
            "ComputeCapability",  # per-GPU targets of a plan (datacenter: build on the target GPU)
            "IBuilderConfig.num_compute_capabilities",
            "IBuilderConfig.set_compute_capability",
            "DynamicShapesKernelSpecializationStrategy",  # kernels compiled at run time
            "IRuntimeConfig.dynamic_shapes_kernel_specialization_strategy",
            "IRuntimeConfig.create_runtime_cache",
            "IRuntimeConfig.set_runtime_cache",
            "Runtime.get_engine_validity",  # asks whether this GPU and driver can run a plan
            "EngineInvalidityDiagnostics",
            "INetworkDefinition.add_normalization_v2",  # datacenter: add_normalization, same arguments
        }
    ),
    "tensorrt": frozenset(),
}

_MODULES: dict[str, ModuleType | None] = {}
_ERRORS: dict[str, str] = {}
_LABELS = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}


def _load(name: str) -> ModuleType:
    if name == "tensorrt_rtx":
        importlib.import_module("tensorrt_rtx_libs")  # loads libtensorrt_rtx*.so before the bindings
        return importlib.import_module("tensorrt_rtx_bindings")
    module = importlib.import_module("tensorrt")
    if not (hasattr(module, "Builder") and hasattr(module, "Runtime")):
        # A namespace package of type stubs imports fine and would pass for the library.
        where = list(getattr(module, "__path__", [])) or getattr(module, "__file__", "?")
        raise ImportError(f"'tensorrt' at {where} has no Builder/Runtime: type stubs or a placeholder, not TensorRT")
    return module


def _module(name: str) -> ModuleType | None:
    if name not in _MODULES:
        try:
            _MODULES[name] = _load(name)
        except Exception as exc:  # the PyPI placeholder raises at import, not only ImportError
            _MODULES[name] = None
            _ERRORS[name] = f"{exc.__class__.__name__}: {exc}"
    return _MODULES[name]


def _check_name(library: str, where: str) -> None:
    if library not in LIBRARIES:
        raise ConfigError(f"{where}: unknown TensorRT library {library!r}; choose one of {list(LIBRARIES)}")


def installed_libraries() -> list[str]:
    """The libraries that import here, e.g. ``["tensorrt_rtx"]``."""
    return [name for name in LIBRARIES if _module(name) is not None]


def build_library() -> str | None:
    """The library builds use: ``FX2TRT_TRT_LIBRARY`` when set, else the first installed one (``None``: none).

    Raises:
        ConfigError: ``FX2TRT_TRT_LIBRARY`` names no known library.
    """
    chosen = os.environ.get(ENV_VAR, "").strip()
    if chosen:
        _check_name(chosen, ENV_VAR)
        return chosen
    installed = installed_libraries()
    return installed[0] if installed else None


def build_library_reason() -> str:
    """Why builds use :func:`build_library`, for the build output.

    Example:
        >>> isinstance(build_library_reason(), str)
        True
    """
    if os.environ.get(ENV_VAR, "").strip():
        return f"chosen by {ENV_VAR}={os.environ[ENV_VAR].strip()}"
    installed = installed_libraries()
    if len(installed) > 1:
        return f"both {' and '.join(installed)} are installed: the first is used unless {ENV_VAR} chooses"
    return "the only TensorRT library installed" if installed else "no TensorRT library installed"


def is_available(library: str | None = None) -> bool:
    """True when ``library`` (default: the build library) imports."""
    try:
        name = library or build_library()
    except ConfigError:
        return False
    return name in LIBRARIES and _module(name) is not None


def get_trt(library: str | None = None) -> ModuleType:
    """The TensorRT module of ``library`` (default: the build library, see :func:`build_library`).

    Raises:
        TensorRTUnavailableError: the library does not import; the message says how to install one.
        ConfigError: an unknown library name (argument or ``FX2TRT_TRT_LIBRARY``).
    """
    name = library or build_library()
    if name is None:
        errors = "; ".join(f"{n}: {_ERRORS.get(n, 'not imported')}" for n in LIBRARIES)
        raise TensorRTUnavailableError(
            f"No TensorRT library could be imported ({errors}). Install TensorRT-RTX with "
            "`pip install 'fx2trt-pipeline[rtx]'` or NVIDIA TensorRT on a GPU host."
        )
    _check_name(name, "get_trt")
    module = _module(name)
    if module is None:
        chosen = f" ({ENV_VAR}={name})" if library is None else ""
        raise TensorRTUnavailableError(
            f"{_LABELS[name]}{chosen} cannot be imported ({_ERRORS.get(name)}). Installed: "
            f"{installed_libraries() or 'none'}. Install {_LABELS[name]} "
            + ("(`pip install 'fx2trt-pipeline[rtx]'`)" if name == "tensorrt_rtx" else "(NVIDIA's tensorrt wheel)")
            + (f", or unset {ENV_VAR}." if library is None else ", or load the engine where it is installed.")
        )
    return module


def library_name(library: str | None = None) -> str:
    """``"tensorrt"`` or ``"tensorrt_rtx"``: ``library`` checked, or the build library (raises when absent)."""
    get_trt(library)
    return str(library or build_library())


def library_version(library: str | None = None) -> str:
    """Version string of ``library`` (default: the build library), e.g. ``"1.7.1.116"``."""
    return str(get_trt(library).__version__)


def library_label(library: str | None = None) -> str:
    """``"TensorRT-RTX 1.7.1.116"``: how users name the library and version."""
    name = library_name(library)
    return f"{_LABELS[name]} {library_version(name)}"


__all__ = [
    "ENV_VAR",
    "LIBRARIES",
    "ONLY_IN",
    "build_library",
    "build_library_reason",
    "get_trt",
    "installed_libraries",
    "is_available",
    "library_label",
    "library_name",
    "library_version",
]
