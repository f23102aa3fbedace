"""TensorRT's messages during a build: warnings and errors on the console, every message in ``tensorrt.log``.

::

    TensorRT logger (trt_types.make_logger)  ->  logging "fx2trt_pipeline.tensorrt"  ->  TensorRTLog (this module)
        VERBOSE / INFO                           kept for tensorrt.log only (the build reads its plan from them)
        WARNING / ERROR / INTERNAL_ERROR         also on stderr, each distinct message once
        known-harmless messages (HARMLESS)       counted, kept for tensorrt.log, not on the console

Without this, a build printed every TensorRT warning through Python's last-resort handler, the same line up to
a hundred times. The file is written into the run's directory at the end of the build (atomically, listed with
the other artifacts).

Example:
    >>> import io, logging
    >>> console = io.StringIO()
    >>> with tensorrt_log(console) as log:
    ...     for _ in range(3):
    ...         logging.getLogger(TENSORRT_LOGGER).warning("%s", "Unused input 'x'")
    ...     logging.getLogger(TENSORRT_LOGGER).debug("%s", "a verbose message")
    >>> console.getvalue()
    "TensorRT WARNING: Unused input 'x'\\n"
    >>> len(log.lines), log.summary()
    (4, 'tensorrt.log: 4 TensorRT messages (3 warnings, 0 errors; 2 repeats not shown again)')
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from fx2trt_pipeline.atomic_io import atomic_write_text
from fx2trt_pipeline.errors import one_line

#: The logging logger TensorRT's messages are forwarded to (fx2trt_pipeline.trt_types).
TENSORRT_LOGGER = "fx2trt_pipeline.tensorrt"
#: File name of the full log in a run's output directory.
TENSORRT_LOG = "tensorrt.log"
#: Messages that TensorRT logs by the dozen about nothing wrong with the build: kept out of the console.
HARMLESS = ("getSize works only for static size",)
_SEVERITY = {
    logging.DEBUG: "VERBOSE",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "INTERNAL_ERROR",
}


class TensorRTLog(logging.Handler):
    """Keeps every TensorRT message and shows warnings and errors on a console stream, each distinct one once.

    Args:
        stream: the console (default: ``sys.stderr`` at the time of each message).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.stream = stream
        self.lines: list[str] = []
        self.counts: Counter[str] = Counter()
        self.harmless = 0
        self.repeats = 0
        self._shown: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message; print a warning or error the first time it is seen (harmless ones never)."""
        severity = _SEVERITY.get(record.levelno, record.levelname)
        message = record.getMessage()
        self.lines.append(f"[{severity}] {message}")
        self.counts[severity] += 1
        if record.levelno < logging.WARNING:
            return
        if any(h in message for h in HARMLESS):
            self.harmless += 1
            return
        if message in self._shown:
            self.repeats += 1
            return
        self._shown.add(message)
        stream = self.stream if self.stream is not None else sys.stderr
        more = " (more in tensorrt.log)" if len(message.strip().splitlines()) > 1 else ""
        print(f"TensorRT {severity}: {one_line(message)}{more}", file=stream, flush=True)

    def summary(self) -> str:
        """``"tensorrt.log: N TensorRT messages (W warnings, E errors; ...)"``."""
        errors = self.counts["ERROR"] + self.counts["INTERNAL_ERROR"]
        hidden = []
        if self.repeats:
            hidden.append(f"{self.repeats} repeats not shown again")
        if self.harmless:
            hidden.append(f"{self.harmless} known-harmless not shown ({', '.join(repr(h) for h in HARMLESS)})")
        tail = "; " + ", ".join(hidden) if hidden else ""
        return (
            f"{TENSORRT_LOG}: {len(self.lines)} TensorRT messages ({self.counts['WARNING']} warnings, "
            f"{errors} errors{tail})"
        )

    def write(self, path: Path) -> None:
        """Write every message kept so far to ``path`` (temp file, then rename)."""
        atomic_write_text(Path(path), "".join(line + "\n" for line in self.lines))


@contextlib.contextmanager
def tensorrt_log(stream: TextIO | None = None) -> Iterator[TensorRTLog]:
    """Within the block, TensorRT's messages go to a :class:`TensorRTLog` (and not on to other handlers)."""
    logger = logging.getLogger(TENSORRT_LOGGER)
    handler = TensorRTLog(stream)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # VERBOSE messages too: the file has every one
    logger.propagate = False  # the console lines come from the handler, once each
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


__all__ = ["HARMLESS", "TENSORRT_LOG", "TENSORRT_LOGGER", "TensorRTLog", "tensorrt_log"]
