"""Which GPUs an engine runs on, what serves it, and why it cannot run here: all read from its sidecar.

An engine is not portable like an ONNX file. TensorRT-RTX plans carry a list of target compute
capabilities in their header (default builds: 8.0, 8.6, 8.9, 12.0, 12.1 and later; never Hopper 9.0);
datacenter TensorRT plans run only on GPUs of the compute capability they were built on unless built
hardware-compatible (``AMPERE_PLUS``: 8.0 and later). And each library only loads its own plans, so
standard Triton (``platform: "tensorrt_plan"``, datacenter TensorRT) cannot serve a TensorRT-RTX plan.

The sidecar's ``compatibility`` section records what decides this at build time::

    library, library_version            which library (and exact version) can deserialize the plan
    hardware_compatibility_level        NONE / AMPERE_PLUS / SAME_COMPUTE_CAPABILITY (datacenter TensorRT)
    built_on                            {"gpu": name, "compute_capability": "8.9"} or None (no GPU at build)
    runs_on                             compute capabilities ("SM86", ..., "later" = any newer one)

:func:`deployment_target` turns it into the one sentence that the build output, the report, the Triton
config and ``Engine.load`` all print; :func:`incompatibility_reason` is the load-time check (a pure
function of the sidecar and a :class:`GpuInfo`, so it is tested without a GPU).

Example:
    >>> meta = {"library": {"name": "tensorrt_rtx", "version": "1.7.1.116"},
    ...         "target_compute_capabilities": ["SM80", "SM86", "SM89", "SM120", "SM121", "later"]}
    >>> incompatibility_reason(meta, GpuInfo("NVIDIA H200", 9, 0)).split(";")[0]
    'NVIDIA H200 (compute capability 9.0, Hopper) is not a target of this TensorRT-RTX engine'
    >>> incompatibility_reason(meta, GpuInfo("NVIDIA GeForce RTX 4090", 8, 9)) is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError, EngineIncompatibleError, EngineLoadError

#: Library names as users know them.
LIBRARY_LABELS = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}
#: Why an engine of each library cannot run where that library is missing.
LIBRARIES_TO_INSTALL = {
    "tensorrt_rtx": "TensorRT-RTX is not installed (pip install 'fx2trt-pipeline[rtx]')",
    "tensorrt": "datacenter TensorRT is not installed (NVIDIA's tensorrt wheel)",
}
#: Architecture family by compute capability (major, minor); the major number alone as fallback.
_ARCHITECTURES = {
    (7, 5): "Turing",
    (8, 0): "Ampere",
    (8, 6): "Ampere",
    (8, 7): "Ampere (Orin)",
    (8, 9): "Ada",
    (9, 0): "Hopper",
    (10, 0): "Blackwell (datacenter)",
    (12, 0): "Blackwell",
    (12, 1): "Blackwell",
}
_ARCH_BY_MAJOR = {7: "Volta/Turing", 8: "Ampere", 9: "Hopper", 10: "Blackwell", 11: "Blackwell", 12: "Blackwell"}
#: Compute capabilities a default TensorRT-RTX build targets (header mask 0x7e), for sidecars without a header.
RTX_DEFAULT_TARGETS = ("SM80", "SM86", "SM89", "SM120", "SM121", "later")


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as far as engine compatibility goes: its name and compute capability."""

    name: str
    major: int
    minor: int

    @property
    def sm(self) -> str:
        """``"SM89"``, spelled like TensorRT-RTX's ComputeCapability enum."""
        return f"SM{self.major}{self.minor}"

    @property
    def compute_capability(self) -> str:
        """``"8.9"``."""
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        return f"{self.name} (compute capability {self.compute_capability}, {architecture(self.major, self.minor)})"

    @classmethod
    def of(cls, device: torch.device | int | None = None) -> GpuInfo | None:
        """The GPU behind ``device`` (default: the current one), or ``None`` without CUDA."""
        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability(device)
        return cls(torch.cuda.get_device_name(device), int(major), int(minor))


def architecture(major: int, minor: int) -> str:
    """Architecture family of a compute capability.

    Example:
        >>> architecture(8, 9), architecture(9, 0), architecture(12, 0)
        ('Ada', 'Hopper', 'Blackwell')
    """
    return _ARCHITECTURES.get((major, minor)) or _ARCH_BY_MAJOR.get(major, "unknown architecture")


def _parse_sm(name: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"SM(\d+)(\d)", str(name))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _cc_text(name: str) -> str:
    parsed = _parse_sm(name)
    return f"{parsed[0]}.{parsed[1]}" if parsed else str(name)


def compatibility_fields(
    library: str, version: str, targets: Sequence[str] | None, hardware_level: str | None, gpu: GpuInfo | None
) -> dict[str, Any]:
    """The sidecar's ``compatibility`` section for an engine being saved.

    Args:
        library, version: the library that built the plan.
        targets: TensorRT-RTX header targets (``None`` for datacenter TensorRT).
        hardware_level: ``BuildOptions.hardware_compatibility_level`` (``None`` means ``"NONE"``).
        gpu: the GPU of the building process, ``None`` when it has none (TensorRT-RTX builds anywhere).

    Example:
        >>> f = compatibility_fields("tensorrt", "10.13.0", None, "AMPERE_PLUS", GpuInfo("NVIDIA A10", 8, 6))
        >>> f["runs_on"], f["built_on"]["compute_capability"]
        (['SM80', 'later'], '8.6')
    """
    level = str(hardware_level or "NONE")
    if library == "tensorrt_rtx":
        runs_on = list(targets or RTX_DEFAULT_TARGETS)
    elif level == "AMPERE_PLUS":
        runs_on = ["SM80", "later"]
    else:
        runs_on = [gpu.sm] if gpu is not None else []
    return {
        "library": library,
        "library_version": version,
        "hardware_compatibility_level": level,
        "built_on": {"gpu": gpu.name, "compute_capability": gpu.compute_capability} if gpu else None,
        "runs_on": runs_on,
    }


def _fields(metadata: Mapping[str, Any]) -> dict[str, Any]:
    # Sidecars written before the compatibility section existed still name the library and RTX targets.
    found = metadata.get("compatibility")
    if isinstance(found, Mapping):
        return dict(found)
    library = metadata.get("library") if isinstance(metadata.get("library"), Mapping) else {}
    name = str(library.get("name", "tensorrt_rtx"))
    level = (metadata.get("build_options") or {}).get("hardware_compatibility_level")
    targets = metadata.get("target_compute_capabilities")
    return compatibility_fields(name, str(library.get("version", "")), targets, level, None)


def _runs_on(runs_on: Sequence[str], gpu: GpuInfo) -> bool:
    if gpu.sm in runs_on:
        return True
    known = [cc for cc in (_parse_sm(n) for n in runs_on) if cc is not None]
    # "later" means GPUs newer than every listed target (TensorRT-RTX: beyond 12.1; AMPERE_PLUS: 8.0+),
    # except Hopper, which TensorRT-RTX never runs on.
    return "later" in runs_on and bool(known) and (gpu.major, gpu.minor) > max(known)


def incompatibility_reason(metadata: Mapping[str, Any], gpu: GpuInfo) -> str | None:
    """Why the engine described by ``metadata`` cannot run on ``gpu``, or ``None`` when it can.

    Example:
        >>> meta = {"compatibility": compatibility_fields("tensorrt", "10.13.0", None, None,
        ...                                               GpuInfo("NVIDIA A10", 8, 6))}
        >>> print(incompatibility_reason(meta, GpuInfo("NVIDIA A100", 8, 0)))
        NVIDIA A100 (compute capability 8.0, Ampere) is not a target of this TensorRT engine; it runs on 8.6 \
(built on NVIDIA A10 with hardware compatibility NONE)
    """
    fields = _fields(metadata)
    library = fields.get("library", "tensorrt_rtx")
    runs_on = list(fields.get("runs_on") or [])
    if library == "tensorrt_rtx" and gpu.major == 9:
        ok = False  # TensorRT-RTX refuses Hopper whatever the plan's targets say
    elif not runs_on:
        return None  # built without a recorded GPU: only TensorRT itself can tell
    else:
        ok = _runs_on(runs_on, gpu)
    if ok:
        return None
    label = LIBRARY_LABELS.get(library, library)
    built = fields.get("built_on")
    origin = (
        f" (built on {built['gpu']} with hardware compatibility {fields.get('hardware_compatibility_level')})"
        if isinstance(built, Mapping) and library != "tensorrt_rtx"
        else ""
    )
    rtx_hopper = library == "tensorrt_rtx" and gpu.major == 9
    hopper = "; TensorRT-RTX does not run on Hopper (9.0) at all" if rtx_hopper else ""
    return f"{gpu} is not a target of this {label} engine; it runs on {_targets_text(runs_on)}{origin}{hopper}"


def _targets_text(runs_on: Sequence[str]) -> str:
    listed = [_cc_text(n) for n in runs_on if n != "later"]
    text = ", ".join(listed) if listed else "the GPU it was built on"
    return text + (" and later" if "later" in runs_on else "")


def _families(runs_on: Sequence[str]) -> str:
    names = [architecture(*cc) for cc in (_parse_sm(n) for n in runs_on) if cc is not None]
    return ", ".join(dict.fromkeys(names))


def gpu_unavailable_reason(metadata: Mapping[str, Any] | None = None) -> str | None:
    """Why engines (this one, given its sidecar) cannot run in this process, or ``None`` when they should.

    The only reasons a GPU test may skip with: no TensorRT library, no CUDA device, or a GPU the engine
    does not target (e.g. "... Hopper ..." for TensorRT-RTX on an H100/H200).

    Example:
        >>> reason = gpu_unavailable_reason()
        >>> reason is None or isinstance(reason, str)
        True
    """
    try:  # the engine's own library (its sidecar), else the build library
        library = str(_fields(metadata).get("library")) if metadata is not None else trt_api.build_library()
    except ConfigError as exc:
        return str(exc)
    if library is None or not trt_api.is_available(library):
        which = LIBRARIES_TO_INSTALL.get(str(library), "no TensorRT library is installed")
        return f"{which} (installed: {trt_api.installed_libraries() or 'none'})"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (torch.cuda.is_available() is False)"
    gpu = GpuInfo.of()
    if metadata is None:
        metadata = {"library": {"name": trt_api.library_name(), "version": trt_api.library_version()}}
        if trt_api.library_name() != "tensorrt_rtx":
            return None  # a datacenter engine's targets are known only from its sidecar
    reason = incompatibility_reason(metadata, gpu) if gpu is not None else None
    if reason is None:
        return None
    return f"{reason}. Run on a GPU it targets, or rebuild it on this one ({deployment_target(metadata)})"


def engine_library(metadata: Mapping[str, Any], where: str) -> tuple[str, str]:
    """``(library, version)`` that built the engine, checked to be installed here in that exact version.

    The engine's library decides, not the build default: a TensorRT-RTX plan loads with TensorRT-RTX
    on a host that also has datacenter TensorRT.

    Raises:
        EngineLoadError: the sidecar names no known library, or the installed one has another version.
        EngineIncompatibleError: that library is not installed here (the engine is intact; exit code 3).
    """
    recorded = metadata.get("library") if isinstance(metadata.get("library"), Mapping) else {}
    name, version = str(recorded.get("name")), str(recorded.get("version"))
    if name not in trt_api.LIBRARIES:
        raise EngineLoadError(
            f"{where}: its sidecar names the library {name!r}, not one of {list(trt_api.LIBRARIES)}; "
            "the sidecar is foreign or edited. Rebuild the engine."
        )
    if not trt_api.is_available(name):
        raise EngineIncompatibleError(
            f"{where} was built with {name} {version}, which is not installed here (installed: "
            f"{trt_api.installed_libraries() or 'none'}); an engine only loads in the library that built it. "
            f"Install {name}=={version}, or rebuild the engine with an installed library "
            f"({trt_api.ENV_VAR} chooses the build library)."
        )
    installed = trt_api.library_version(name)
    if installed != version:
        raise EngineLoadError(
            f"{where} was built with {name} {version} but {name} {installed} is installed; TensorRT "
            "engines only load in the exact library version that built them. Rebuild the engine with "
            f"this version, or install {name}=={version}."
        )
    return name, version


def deployment_target(metadata: Mapping[str, Any]) -> str:
    """One sentence: the library, the GPUs the engine runs on, and what can serve it.

    The build output, the report headline, the Triton ``config.pbtxt`` and ``Engine.load``'s error on an
    unsupported GPU all print this sentence.

    Example:
        >>> meta = {"library": {"name": "tensorrt_rtx", "version": "1.7.1.116"},
        ...         "target_compute_capabilities": ["SM80", "SM86", "SM89", "SM120", "SM121", "later"]}
        >>> print(deployment_target(meta))
        TensorRT-RTX 1.7.1.116 engine for compute capability 8.0, 8.6, 8.9, 12.0, 12.1 and later (Ampere, Ada, \
Blackwell; not Hopper H100/H200); served by TensorRT-RTX 1.7.1.116 (fx2trt_pipeline.Engine or an application \
linked against it), not by datacenter TensorRT nor Triton's standard tensorrt_plan backend.
    """
    fields = _fields(metadata)
    library = str(fields.get("library", "tensorrt_rtx"))
    version = str(fields.get("library_version", ""))
    label = f"{LIBRARY_LABELS.get(library, library)} {version}".strip()
    runs_on = list(fields.get("runs_on") or [])
    families = _families(runs_on)
    if library == "tensorrt_rtx":
        gpus = f"compute capability {_targets_text(runs_on)} ({families}; not Hopper H100/H200)"
        served = (
            f"served by {label} (fx2trt_pipeline.Engine or an application linked against it), "
            "not by datacenter TensorRT nor Triton's standard tensorrt_plan backend"
        )
    else:
        level = fields.get("hardware_compatibility_level", "NONE")
        built = fields.get("built_on")
        where = f", built on {built['gpu']}" if isinstance(built, Mapping) else ""
        only = "" if "later" in runs_on else " only"
        gpus = f"compute capability {_targets_text(runs_on)}{only} (hardware compatibility {level}{where})"
        served = f"served by {label} exactly, e.g. Triton's tensorrt_plan backend built against that version"
    return f"{label} engine for {gpus}; {served}."


__all__ = [
    "GpuInfo",
    "LIBRARY_LABELS",
    "RTX_DEFAULT_TARGETS",
    "architecture",
    "compatibility_fields",
    "deployment_target",
    "engine_library",
    "gpu_unavailable_reason",
    "incompatibility_reason",
]
