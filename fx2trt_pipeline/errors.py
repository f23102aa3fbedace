"""One exception family for the whole pipeline.

Every message says what went wrong, where (node, layer, file) and how to fix it.
Catch :class:`Fx2TrtError` to handle anything the pipeline raises on purpose;
:class:`InternalError` marks a bug in fx2trt-pipeline itself.
"""

from __future__ import annotations

import enum
import re
from typing import Any

#: ANSI terminal escape sequences (colours, bold): torch.load's refusal carries some; a log line must not.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def plain_text(text: str) -> str:
    r"""``text`` without ANSI escape sequences (terminal colours and bold).

    Example:
        >>> plain_text("\x1b[1mdo this\x1b[0m now")
        'do this now'
    """
    return _ANSI.sub("", text)


def one_line(text: str) -> str:
    r"""The first non-empty line of ``text``, stripped of ANSI codes and surrounding space (or ``"(no message)"``).

    Example:
        >>> one_line("\n  \x1b[31mbad\x1b[0m value\nmore")
        'bad value'
    """
    return next((ln.strip() for ln in plain_text(text).splitlines() if ln.strip()), "") or "(no message)"


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
    """The graph has nodes no converter (or exporter) accepts; lists every one of them.

    Nodes with the same target and reason are grouped (``torch.cumsum x 12: cumsum, cumsum_1, ...``) so that
    a transformer with the same block twelve times gives one line per missing op, not one per node.

    Example:
        >>> rows = [(f"cumsum_{i}", "torch.cumsum", "no converter registered for this target", "") for i in range(3)]
        >>> print(str(UnsupportedOpsError(rows)).splitlines()[1])
          - torch.cumsum x 3: cumsum_0, cumsum_1, cumsum_2
    """

    def __init__(self, rows: list[tuple[str, str, str, str]], what: str = "TensorRT converter") -> None:
        self.rows = rows
        groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for name, target, reason, where in rows:
            groups.setdefault((target, reason), []).append((name, where))
        lines = [f"{len(rows)} node(s) ({len(groups)} distinct target(s)) have no {what}:"]
        for (target, reason), nodes in groups.items():
            names = ", ".join(n for n, _ in nodes[:8]) + (f", ... (+{len(nodes) - 8} more)" if len(nodes) > 8 else "")
            lines.append(f"  - {target}{f' x {len(nodes)}' if len(nodes) > 1 else ''}: {names}")
            lines.append(f"      reason: {reason}" + (f"  [first at {nodes[0][1]}]" if nodes[0][1] else ""))
        lines.append(_unsupported_remedy(next(iter(groups))[0] if groups else "target", what))
        super().__init__("\n".join(lines))


def _unsupported_remedy(target: str, what: str) -> str:
    """Remedies that remove the node from what is converted (QuantConfig.skip would keep it in the graph)."""
    if what != "TensorRT converter":
        return (
            "Remedy: rewrite these nodes with supported ops, or keep them out of the exported graph "
            "(compute them in pre/post-processing outside the model's forward)."
        )
    key = f'method("{target[7:]}")' if target.startswith("Tensor.") else target
    short = target.rsplit(".", 1)[-1].lower()
    return (
        "Remedy (any one of):\n"
        "  1. register a converter for the target (from fx2trt_pipeline.converters import register), e.g.\n"
        f"         @register({key})\n"
        f"         def convert_{short}(ctx, node, args, kwargs): ...  # build layers with network/*_builders.py\n"
        "  2. make the module that calls it a leaf (QuantConfig(leaf_modules=(...))) and register a converter for\n"
        "     that module class, or rewrite the module with supported ops before quantizing;\n"
        "  3. keep it out of the exported graph: move it to pre/post-processing outside the model's forward."
    )


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
