"""Builder settings: one frozen dataclass, resolved against the TensorRT library in one place.

Every field defaults to ``None`` (or empty), meaning "the library's default", so an options object
records only what the user asked for; :meth:`BuildOptions.to_dict` goes into the engine's metadata.

Two libraries differ in how an engine is made portable across GPUs:

* TensorRT-RTX targets a list of compute capabilities (``IBuilderConfig.set_compute_capability``);
  by default it builds for Ampere and later, and Turing (SM75) must be asked for explicitly.
  ``hardware_compatibility_level`` exists in its API but is ignored (it logs "unsupported").
* Datacenter TensorRT has no compute-capability list; it has ``hardware_compatibility_level``
  (``AMPERE_PLUS``).

Both settings are checked by feature, not by library name, and asking for one the library in use
cannot honour is a :class:`~fx2trt_pipeline.errors.ConfigError` that says which one to use instead.

Example:
    >>> from fx2trt_pipeline.engine.options import BuildOptions
    >>> opts = BuildOptions(workspace_bytes=1 << 30, compute_capabilities=("8.6", "sm89"))
    >>> opts.compute_capabilities
    ('SM86', 'SM89')
    >>> BuildOptions.from_dict(opts.to_dict()) == opts
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError

_PROFILING_VERBOSITY = ("LAYER_NAMES_ONLY", "DETAILED", "NONE")
_HW_COMPAT = ("NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")
_MAX_OPT_LEVEL = 5  # TensorRT silently clamps higher values to 5; we refuse them instead


def normalize_compute_capability(value: str | int | float) -> str:
    """Spell a compute capability the way the TensorRT-RTX enum does (``"SM86"``, ``"CURRENT"``).

    Accepts ``"8.6"``, ``8.6``, ``86``, ``"86"``, ``"sm_86"``, ``"SM86"`` and ``"current"``.

    Example:
        >>> normalize_compute_capability("8.9"), normalize_compute_capability(120)
        ('SM89', 'SM120')
    """
    text = str(value).strip().upper().replace("_", "")
    if text == "CURRENT":
        return text
    match = re.fullmatch(r"(?:SM)?(\d{1,2})\.(\d)|(?:SM)?(\d{2,3})", text)
    if not match:
        raise ConfigError(
            f"Compute capability {value!r} is not valid; write it as '8.6', 86 or 'SM86' "
            "(or 'CURRENT' for the GPU in this machine)"
        )
    digits = match.group(1) + match.group(2) if match.group(1) else match.group(3)
    return f"SM{int(digits)}"


@dataclass(frozen=True)
class BuildOptions:
    """How to build an engine (all optional; ``None`` keeps TensorRT's default).

    Attributes:
        workspace_bytes: limit of the WORKSPACE memory pool, like trtexec's ``--memPoolSize=workspace:``.
        builder_optimization_level: 0 (fast build) to 5 (slowest build, fastest engine); TensorRT's
            default is 3.
        timing_cache_path: timing cache file, loaded when it exists and (re)written atomically after
            the build, like trtexec's ``--timingCacheFile``. TensorRT-RTX accepts the calls but treats
            them as no-ops (its kernels are chosen at run time), so there the file only round-trips.
        compute_capabilities: target GPUs for TensorRT-RTX (``("SM86", "SM89")`` or ``("CURRENT",)``).
        hardware_compatibility_level: ``"AMPERE_PLUS"`` etc., datacenter TensorRT only.
        profiling_verbosity: ``"LAYER_NAMES_ONLY"`` (TensorRT's default), ``"DETAILED"`` or ``"NONE"``.
    """

    workspace_bytes: int | None = None
    builder_optimization_level: int | None = None
    timing_cache_path: Path | None = None
    compute_capabilities: tuple[str, ...] = field(default=())
    hardware_compatibility_level: str | None = None
    profiling_verbosity: str | None = None

    def __post_init__(self) -> None:
        # Normalise here so equal settings compare (and hash into metadata) equal.
        if self.workspace_bytes is not None and int(self.workspace_bytes) <= 0:
            raise ConfigError(f"workspace_bytes must be a positive number of bytes, got {self.workspace_bytes}")
        level = self.builder_optimization_level
        if level is not None and not 0 <= int(level) <= _MAX_OPT_LEVEL:
            raise ConfigError(f"builder_optimization_level must be 0..{_MAX_OPT_LEVEL}, got {level}")
        if self.timing_cache_path is not None:
            object.__setattr__(self, "timing_cache_path", Path(self.timing_cache_path))
        ccs: Sequence[Any] = self.compute_capabilities
        if isinstance(ccs, (str, int, float)):
            ccs = (ccs,)
        normalized = tuple(dict.fromkeys(normalize_compute_capability(c) for c in ccs))
        if "CURRENT" in normalized and len(normalized) > 1:
            raise ConfigError(
                "compute_capabilities: 'CURRENT' (the GPU of this machine) cannot be combined "
                f"with other targets, got {normalized}"
            )
        object.__setattr__(self, "compute_capabilities", normalized)
        for name, allowed in (
            ("hardware_compatibility_level", _HW_COMPAT),
            ("profiling_verbosity", _PROFILING_VERBOSITY),
        ):
            value = getattr(self, name)
            if value is not None:
                value = str(value).split(".")[-1].upper()  # also accept the enum or its repr
                if value not in allowed:
                    raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
                object.__setattr__(self, name, value)
        if self.compute_capabilities and self.hardware_compatibility_level not in (None, "NONE"):
            raise ConfigError(
                "Give either compute_capabilities (TensorRT-RTX) or hardware_compatibility_level "
                "(datacenter TensorRT), not both"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the engine metadata sidecar)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildOptions:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown build option(s) {unknown}; valid ones are {sorted(known)}")
        kwargs = dict(data)
        if kwargs.get("compute_capabilities") is None:
            kwargs.pop("compute_capabilities", None)
        return cls(**kwargs)


def apply_build_options(options: BuildOptions, config: Any, trt: Any) -> None:
    """Set ``options`` on a TensorRT ``IBuilderConfig`` (timing cache excluded: see engine_builder).

    Args:
        options: the settings.
        config: ``builder.create_builder_config()``.
        trt: the TensorRT module (``trt_api.get_trt()``).

    Raises:
        ConfigError: a setting is not available in the library in use, or TensorRT refused it.

    Example:
        >>> from fx2trt_pipeline import trt_api
        >>> trt = trt_api.get_trt()
        >>> config = trt.Builder(trt.Logger()).create_builder_config()
        >>> apply_build_options(BuildOptions(builder_optimization_level=2), config, trt)
        >>> config.builder_optimization_level
        2
    """
    if options.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = int(options.builder_optimization_level)
    if options.profiling_verbosity is not None:
        config.profiling_verbosity = getattr(trt.ProfilingVerbosity, options.profiling_verbosity)
    if options.compute_capabilities:
        _set_compute_capabilities(options.compute_capabilities, config, trt)
    if options.hardware_compatibility_level not in (None, "NONE"):
        _set_hardware_compatibility(str(options.hardware_compatibility_level), config, trt)


def _library() -> str:
    return f"{trt_api.library_name()} {trt_api.library_version()}"


def _set_compute_capabilities(names: tuple[str, ...], config: Any, trt: Any) -> None:
    # tensorrt_rtx only: a plan names its target GPUs (datacenter TensorRT builds for the GPU it runs on)
    enum = getattr(trt, "ComputeCapability", None)
    if enum is None or not hasattr(config, "set_compute_capability"):
        raise ConfigError(
            f"compute_capabilities={list(names)} needs TensorRT-RTX; {_library()} has no "
            "per-compute-capability targets. Use hardware_compatibility_level='AMPERE_PLUS' for a portable "
            "engine, or build on the target GPU."
        )
    available = [n for n in enum.__members__ if n != "NONE"]
    missing = [n for n in names if n not in enum.__members__ or n == "NONE"]
    if missing:
        raise ConfigError(f"Compute capability {missing} is not a target of {_library()}; available: {available}")
    config.num_compute_capabilities = len(names)
    for index, name in enumerate(names):
        if not config.set_compute_capability(getattr(enum, name), index):
            hint = " (CURRENT needs a CUDA GPU in this machine)" if name == "CURRENT" else ""
            raise ConfigError(f"TensorRT refused compute capability {name} at index {index}{hint}")


def _set_hardware_compatibility(level: str, config: Any, trt: Any) -> None:
    enum = getattr(trt, "HardwareCompatibilityLevel", None)
    wanted = getattr(enum, level, None) if enum is not None else None
    if wanted is not None:
        config.hardware_compatibility_level = wanted
    # TensorRT-RTX has the property but ignores it (reads back NONE): check what stuck, not the name.
    if wanted is None or getattr(config, "hardware_compatibility_level", None) != wanted:
        raise ConfigError(
            f"hardware_compatibility_level={level!r} is not supported by {_library()}. "
            "With TensorRT-RTX choose target GPUs with compute_capabilities=('SM86', 'SM89', ...) instead; "
            "its engines run on Ampere and later by default."
        )
