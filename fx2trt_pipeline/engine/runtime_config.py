"""Execution-context settings: TensorRT-RTX's runtime config, its kernel specialization and runtime cache.

TensorRT-RTX compiles its kernels just in time: when the execution context is created and, for
dynamic shapes, per input shape. ``IRuntimeConfig`` (``engine.create_runtime_config()``) decides how:

* ``dynamic_shapes``: ``"eager"`` compiles a kernel specialized to each new shape on its first call
  (one slow call per shape, then the fast kernel every time: what this package uses by default, since
  validation needs every call of one shape to take the same kernels); ``"lazy"`` (TensorRT-RTX's own
  default) runs a generic kernel and swaps the specialized one in later from a background thread;
  ``"none"`` always runs the generic kernels (no per-shape compilation at all).
* ``runtime_cache``: a file of compiled kernels, loaded when the context is created and written by
  :meth:`~fx2trt_pipeline.engine.runtime.Engine.save_runtime_cache`, so that a second process skips
  the compilation. ``True`` puts it next to the engine (``model.plan.runtime_cache``).

Datacenter TensorRT compiles nothing at run time; asking it for either setting is a ConfigError.
First-call compilation must stay out of timed figures: ``Engine.warm_up`` runs every profile shape
once, and the engine runners call it before anything is timed.

Example:
    >>> opts = RuntimeOptions(dynamic_shapes="none", runtime_cache=True)
    >>> opts.cache_path("out/model.plan").name
    'model.plan.runtime_cache'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from fx2trt_pipeline.atomic_io import atomic_write_bytes
from fx2trt_pipeline.errors import ConfigError, EngineLoadError

_LOG = logging.getLogger("fx2trt_pipeline.tensorrt")
_STRATEGIES = ("eager", "lazy", "none")
#: Suffix of the runtime cache file that ``runtime_cache=True`` puts next to the engine.
RUNTIME_CACHE_SUFFIX = ".runtime_cache"


@dataclass(frozen=True)
class RuntimeOptions:
    """How an execution context is created (TensorRT-RTX settings; ``None`` = this package's default).

    Attributes:
        dynamic_shapes: ``"eager"``, ``"lazy"`` or ``"none"`` (see the module docstring); ``None``
            means ``"eager"`` under TensorRT-RTX and nothing under datacenter TensorRT.
        runtime_cache: path of a runtime cache file, ``True`` for ``<engine>.runtime_cache``, or
            ``None``/``False`` for no cache.
    """

    dynamic_shapes: str | None = None
    runtime_cache: Union[bool, str, Path, None] = None

    def __post_init__(self) -> None:
        if self.dynamic_shapes is not None:
            value = str(self.dynamic_shapes).split(".")[-1].lower()  # also accept the enum or its repr
            if value not in _STRATEGIES:
                raise ConfigError(f"dynamic_shapes must be one of {_STRATEGIES}, got {self.dynamic_shapes!r}")
            object.__setattr__(self, "dynamic_shapes", value)
        if isinstance(self.runtime_cache, str):
            object.__setattr__(self, "runtime_cache", Path(self.runtime_cache))

    def cache_path(self, engine_path: str | Path | None) -> Path | None:
        """The runtime cache file for an engine at ``engine_path`` (``None``: no cache).

        Raises:
            ConfigError: ``runtime_cache=True`` for an engine that has no path (loaded from bytes).
        """
        if self.runtime_cache is None or self.runtime_cache is False:
            return None
        if self.runtime_cache is True:
            if engine_path is None:
                raise ConfigError(
                    "runtime_cache=True puts the cache next to the engine file, but this engine was loaded "
                    "from bytes: give the cache file's path instead"
                )
            path = Path(engine_path)
            return path.with_name(path.name + RUNTIME_CACHE_SUFFIX)
        return Path(self.runtime_cache)


def _strategy_enum(trt: Any, runtime_config: Any, options: RuntimeOptions, library: str) -> Any:
    enum = getattr(trt, "DynamicShapesKernelSpecializationStrategy", None)
    # tensorrt_rtx only: kernels compiled at run time, per shape
    if (
        enum is None
        or runtime_config is None
        or not hasattr(runtime_config, "dynamic_shapes_kernel_specialization_strategy")
    ):
        if options.dynamic_shapes is not None:
            raise ConfigError(
                f"dynamic_shapes={options.dynamic_shapes!r} needs TensorRT-RTX; {library} compiles no kernels at "
                "run time. Leave RuntimeOptions.dynamic_shapes unset."
            )
        return None
    return getattr(enum, (options.dynamic_shapes or "eager").upper())


def _load_cache(runtime_config: Any, path: Path) -> Any:
    cache = runtime_config.create_runtime_cache()
    if cache is None:
        raise EngineLoadError(f"TensorRT could not create a runtime cache for {path}")
    if path.is_file() and not cache.deserialize(path.read_bytes()):
        # A cache of another GPU, driver or version is useless, not wrong: compile afresh and overwrite it.
        _LOG.warning("Runtime cache %s was written for another GPU/driver/version; starting a new one", path)
    if not runtime_config.set_runtime_cache(cache):
        raise EngineLoadError(f"TensorRT refused the runtime cache {path} (IRuntimeConfig.set_runtime_cache)")
    return cache


def create_context(
    cuda_engine: Any, trt: Any, options: RuntimeOptions, cache: Path | None, library: str, logger: Any = None
) -> tuple[Any, Any, Any]:
    """An execution context created with a runtime config when the library has one.

    Returns ``(context, runtime_config, runtime_cache)``; keep all three alive together (the context
    reads the config's cache).

    Args:
        library: the library's name and version, for messages (``"TensorRT-RTX 1.7.1.116"``).
        logger: the engine's recording logger: a failure quotes what TensorRT logged.

    Raises:
        ConfigError: a TensorRT-RTX setting was asked of a library without it.
        EngineLoadError: TensorRT returned no context; the message quotes TensorRT's errors.
    """
    runtime_config = runtime_cache = None
    if hasattr(cuda_engine, "create_runtime_config"):
        runtime_config = cuda_engine.create_runtime_config()
    strategy = _strategy_enum(trt, runtime_config, options, library)
    if strategy is not None:
        runtime_config.dynamic_shapes_kernel_specialization_strategy = strategy
    if cache is not None:
        if runtime_config is None or not hasattr(runtime_config, "create_runtime_cache"):  # tensorrt_rtx only
            raise ConfigError(f"runtime_cache needs TensorRT-RTX; {library} has no runtime kernel cache")
        runtime_cache = _load_cache(runtime_config, cache)
    since = len(getattr(logger, "messages", []))
    try:
        if runtime_config is not None:
            context = cuda_engine.create_execution_context(runtime_config)
        else:
            context = cuda_engine.create_execution_context()
    except Exception as exc:  # a binding may raise instead of returning None
        raise _context_error(library, logger, since, f" ({exc.__class__.__name__}: {exc})") from exc
    if context is None:
        raise _context_error(library, logger, since, "")
    return context, runtime_config, runtime_cache


def _context_error(library: str, logger: Any, since: int, raised: str) -> EngineLoadError:
    errors = logger.errors(since) if hasattr(logger, "errors") else []
    # TensorRT-RTX compiles the engine's kernels for this GPU when the context is created: a compile
    # failure, an unsupported driver or too little memory all end here, so no cause is guessed.
    jit = " (TensorRT-RTX compiles the engine's kernels for this GPU at this step)" if "RTX" in library else ""
    said = ("; TensorRT said: " + " | ".join(errors)) if errors else "; TensorRT logged no error"
    return EngineLoadError(
        f"{library} could not create an execution context{jit}{raised}{said}. Check the messages above; "
        "free GPU memory if they name an allocation, update the driver if they name it."
    )


def save_cache(runtime_cache: Any, path: Path) -> int:
    """Write a runtime cache atomically; returns the bytes written (0: nothing compiled yet)."""
    blob = runtime_cache.serialize()
    data = bytes(memoryview(blob)) if blob is not None else b""
    if data:
        atomic_write_bytes(path, data)
    return len(data)


__all__ = ["RUNTIME_CACHE_SUFFIX", "RuntimeOptions", "create_context", "save_cache"]
