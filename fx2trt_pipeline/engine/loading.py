"""Deserializing an engine: its library, its device, whether this GPU can run it, TensorRT's own verdict.

::

    engine bytes + sidecar
      -> library: the one the sidecar names (bytes alone: a TensorRT-RTX header says TensorRT-RTX)
      -> device: a CUDA device ("cpu" is an error, no GPU is EngineIncompatibleError)
      -> can this GPU run it?  TensorRT-RTX: Runtime.get_engine_validity (the runtime's answer, for
                               this GPU and driver); datacenter TensorRT: the sidecar's targets
      -> Runtime.deserialize_cuda_engine, failures quoting what TensorRT logged

The runtime is made through :func:`make_runtime` so that CPU tests can put a fake in its place.

Example:
    >>> resolve_device("cuda:1")
    device(type='cuda', index=1)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import parse_rtx_header
from fx2trt_pipeline.engine.compatibility import (
    GpuInfo,
    deployment_target,
    engine_library,
    gpu_unavailable_reason,
    incompatibility_reason,
)
from fx2trt_pipeline.errors import ConfigError, EngineIncompatibleError, EngineLoadError
from fx2trt_pipeline.trt_types import make_logger

DeviceLike = int | str | torch.device | None
_LOG = logging.getLogger("fx2trt_pipeline.tensorrt")
#: Validity diagnostics that mean "this machine cannot run the plan" (exit code 3), not "the plan is bad".
_CANNOT_RUN_HERE = {
    "UNSUPPORTED_CC": "this GPU is not one the plan targets: run it on a GPU it targets, or rebuild it with "
    "BuildOptions(compute_capabilities=...) naming this one",
    "OLD_CUDA_DRIVER": "the NVIDIA driver is older than the library needs: update the driver",
    "OLD_CUDA_RUNTIME": "the CUDA runtime is older than the library needs: update CUDA",
}


def resolve_device(device: DeviceLike) -> torch.device:
    """The CUDA device an engine runs on, always with an index (``"cuda"`` -> the current device).

    Raises:
        ConfigError: a non-CUDA device such as ``"cpu"``: engines only run on CUDA devices.

    Example:
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


def metadata_of_bytes(data: bytes) -> dict[str, Any]:
    """What engine bytes without a sidecar say: a TensorRT-RTX header names its library and targets."""
    header = parse_rtx_header(bytes(data))
    if header is None:  # no header we can read: assume the build library
        return {"library": {"name": trt_api.library_name(), "version": trt_api.library_version()}}
    return {
        "library": {"name": "tensorrt_rtx", "version": header.version},
        "target_compute_capabilities": header.compute_capabilities,
    }


def _incompatible(where: str, reason: str, meta: Mapping[str, Any]) -> EngineIncompatibleError:
    return EngineIncompatibleError(
        f"{where} cannot run here: {reason}. It is a {deployment_target(meta)} Run it on a GPU it "
        "targets, or rebuild it there (BuildOptions(compute_capabilities=...) for TensorRT-RTX)."
    )


def check_runs_here(metadata: Mapping[str, Any], device: DeviceLike, where: str) -> torch.device:
    """The resolved device, after the checks that need no TensorRT runtime (no GPU; the sidecar's targets).

    TensorRT-RTX engines are then asked about once more by :func:`check_validity`; this check alone
    decides for datacenter TensorRT, whose runtime has no such question.

    Raises:
        ConfigError: ``device`` is not a CUDA device.
        EngineIncompatibleError: no CUDA device, or a GPU the sidecar says the engine does not target.
    """
    if device is not None and not isinstance(device, int) and torch.device(device).type != "cuda":
        resolve_device(device)  # raises the "CUDA devices only" error, with or without a GPU here
    if not torch.cuda.is_available():
        raise _incompatible(where, str(gpu_unavailable_reason(metadata)), metadata)
    dev = resolve_device(device)
    gpu = GpuInfo.of(dev)
    reason = incompatibility_reason(metadata, gpu) if gpu is not None else None
    if reason is not None and not _asks_runtime(metadata):
        raise _incompatible(where, reason, metadata)
    return dev


def _asks_runtime(metadata: Mapping[str, Any]) -> bool:
    # TensorRT-RTX only: its runtime says itself whether this GPU and driver run the plan.
    library = str(engine_library_name(metadata))
    return hasattr(trt_api.get_trt(library).Runtime, "get_engine_validity")


def engine_library_name(metadata: Mapping[str, Any]) -> str:
    """The library the metadata names (``tensorrt_rtx`` when it names none)."""
    library = metadata.get("library")
    return str(library.get("name")) if isinstance(library, Mapping) else "tensorrt_rtx"


def check_validity(
    runtime: Any, data: bytes, trt: Any, meta: Mapping[str, Any], gpu: Any, where: str, errors: Callable[[], list[str]]
) -> None:
    """Ask TensorRT-RTX's ``Runtime.get_engine_validity`` whether this GPU and driver run the plan.

    Does nothing for a library without the question (datacenter TensorRT: :func:`check_runs_here`
    decided from the sidecar). A SUBOPTIMAL plan runs, with a warning.

    Args:
        errors: what TensorRT logged since the runtime was made (quoted in the error).

    Raises:
        EngineIncompatibleError: INVALID for this machine (compute capability, driver, CUDA runtime).
        EngineLoadError: INVALID for the plan itself (version, malformed, CUDA error, memory), or with
            no diagnostic.
    """
    if not hasattr(runtime, "get_engine_validity"):  # tensorrt_rtx only
        return
    try:
        validity, flags = runtime.get_engine_validity(data)
    except Exception as exc:
        raise EngineLoadError(f"TensorRT-RTX could not check {where} on {gpu}: {exc}") from exc
    names = [n for n, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(flags) & int(v)]
    verdict = str(validity).split(".")[-1]
    if verdict == "SUBOPTIMAL":
        _LOG.warning("TensorRT-RTX says %s is SUBOPTIMAL on %s %s; it runs", where, gpu, names)
    if verdict != "INVALID":
        return
    said = f"TensorRT-RTX's engine validity check on {gpu}: INVALID {names}"
    here = [_CANNOT_RUN_HERE[n] for n in names if n in _CANNOT_RUN_HERE]
    if here:
        raise _incompatible(where, f"{said}; {'; '.join(here)}", meta)
    logged = errors()
    raise EngineLoadError(
        f"{where} cannot be loaded: {said}"
        + (f". TensorRT said: {' | '.join(logged)}" if logged else "")
        + f". VERSION_MISMATCH or MALFORMED_ENGINE: rebuild the engine with {trt_api.library_label('tensorrt_rtx')}; "
        "INSUFFICIENT_GPU_MEMORY: free GPU memory; CUDA_ERROR or no diagnostic: check the GPU and driver "
        "(nvidia-smi)."
    )


@dataclass
class Owner:
    """TensorRT objects the engine must not outlive: the runtime that made it, and its logger."""

    runtime: Any = None
    logger: Any = None
    library: str = ""


def make_runtime(trt: Any, logger: Any) -> Any:
    """``trt.Runtime(logger)`` (a seam: CPU tests put a fake runtime here)."""
    return trt.Runtime(logger)


def deserialize(
    data: bytes, metadata: Mapping[str, Any] | None, where: str, device: DeviceLike
) -> tuple[Any, dict[str, Any], torch.device, Owner]:
    """``(cuda_engine, metadata, device, owner)`` after every check, with the engine's own library.

    Raises:
        ConfigError: ``device`` is not a CUDA device.
        EngineIncompatibleError: no GPU, the engine's library is not installed, or a GPU or driver it
            cannot run on (the message states the engine's deployment target).
        EngineLoadError: TensorRT refused the plan (quoting what it logged).
    """
    meta = dict(metadata) if metadata else metadata_of_bytes(data)
    library, _ = engine_library(meta, where)
    dev = check_runs_here(meta, device, where)
    trt = trt_api.get_trt(library)
    owner = Owner(None, make_logger("WARNING", library=library), library)
    owner.runtime = make_runtime(trt, owner.logger)
    torch.cuda.init()  # TensorRT then shares torch's primary CUDA context on this device
    gpu = GpuInfo.of(dev)
    with torch.cuda.device(dev):
        check_validity(owner.runtime, data, trt, meta, gpu, where, owner.logger.errors)
        cuda_engine = owner.runtime.deserialize_cuda_engine(data)
    if cuda_engine is None:
        errors = owner.logger.errors()
        raise EngineLoadError(
            f"TensorRT ({trt_api.library_label(library)}) could not deserialize {where} on {gpu}, a GPU the "
            "engine targets: the plan is corrupt or was built by another library version. Rebuild it with "
            "this version." + (" TensorRT said: " + " | ".join(errors) if errors else "")
        )
    return cuda_engine, meta, dev, owner


__all__ = [
    "DeviceLike",
    "Owner",
    "check_runs_here",
    "check_validity",
    "deserialize",
    "make_runtime",
    "metadata_of_bytes",
    "resolve_device",
]
