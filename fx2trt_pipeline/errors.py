"""One exception family for the whole pipeline.

Every message says what went wrong, where (node, layer, file) and how to fix it.
Catch :class:`Fx2TrtError` to handle anything the pipeline raises on purpose;
:class:`InternalError` marks a bug in fx2trt-pipeline itself.
"""

from __future__ import annotations

import enum
from typing import Any


class ExitCode(enum.IntEnum):
    """The one exit-code table of ``fx2trt build`` and ``fx2trt validate`` (and their library entry points)."""

    PASS = 0  #: everything ran and every gate passed
    GATE_FAILED = 1  #: an accuracy or parity gate failed (artifacts are still written)
    BAD_INPUT = 2  #: bad command line, config, model, data or file
    BACKEND_UNAVAILABLE = 3  #: a requested backend cannot run on this machine


class Fx2TrtError(Exception):
    """Base class of every error fx2trt-pipeline raises on purpose."""


class ConfigError(Fx2TrtError, ValueError):
    """A configuration value, key or calibrator name is not valid."""


class CaptureError(Fx2TrtError):
    """The model cannot be captured with torch.fx (or its example inputs do not fit it)."""


class CalibrationError(Fx2TrtError):
    """Calibration data is missing or invalid (empty, NaN/Inf, wrong shape)."""


class UnsupportedOpsError(Fx2TrtError):
    """The graph has nodes no converter (or exporter) accepts; lists every one of them."""

    def __init__(self, rows: list[tuple[str, str, str, str]], what: str = "TensorRT converter") -> None:
        self.rows = rows
        lines = [f"{len(rows)} node(s) have no {what}:"]
        for name, target, reason, where in rows:
            lines.append(f"  - {name} ({target}): {reason}" + (f"  [{where}]" if where else ""))
        lines.append(
            "Remedy: keep these modules out of the quantized graph (QuantConfig.skip), rewrite them with "
            "supported ops, or register a converter for the target."
        )
        super().__init__("\n".join(lines))


class ConversionError(Fx2TrtError):
    """A converter failed on a node it accepted."""


class EngineBuildError(Fx2TrtError):
    """The TensorRT builder refused the network or the engine could not be written."""


class EngineLoadError(Fx2TrtError):
    """An engine file is missing, truncated, corrupt or built by another library version."""


class TensorRTUnavailableError(Fx2TrtError, ImportError):
    """Neither TensorRT nor TensorRT-RTX can be imported."""


class EngineRuntimeError(Fx2TrtError, RuntimeError):
    """An engine could not be executed (TensorRT refused the shapes or the enqueue failed)."""


class EngineInputError(EngineRuntimeError, ValueError):
    """A tensor given to an engine has the wrong name, device, dtype or shape."""


class BackendUnavailableError(Fx2TrtError):
    """A requested backend (engine, ONNX Runtime, ...) cannot run on this machine (exit code 3)."""


class EngineIncompatibleError(EngineLoadError, BackendUnavailableError):
    """An intact engine that cannot run on this machine: no GPU, or a GPU it does not target (exit code 3)."""


class StepFailedError(Fx2TrtError):
    """A pipeline step raised; ``step`` names it and ``__cause__`` is the original exception."""

    def __init__(self, step: str, index: int, total: int, cause: BaseException, message: str) -> None:
        self.step, self.index, self.total, self.cause = step, index, total, cause
        super().__init__(message)


class AccuracyGateError(Fx2TrtError):
    """An accuracy gate failed (engine vs simulated, or INT8 vs FP32 budget)."""


class ExportError(Fx2TrtError):
    """The quantized model cannot be exported (e.g. to QDQ ONNX)."""


class InternalError(Fx2TrtError, RuntimeError):
    """A bug in fx2trt-pipeline; please report it with the message."""


def node_location(node: Any) -> str:
    """The innermost *user* frame (``File "...", line N, in f``) of an FX node's stack trace, or ``""``.

    torch appends its own tracing frames after the user's, so frames inside torch are skipped.
    """
    import os

    import torch

    trace = getattr(node, "stack_trace", None) or getattr(node, "meta", {}).get("stack_trace")
    if not trace:
        return ""
    torch_dir = os.path.dirname(torch.__file__)
    frames = [ln.strip() for ln in trace.splitlines() if ln.strip().startswith("File ")]
    user = [f for f in frames if torch_dir not in f]
    return user[-1] if user else (frames[-1] if frames else "")
