"""Named, timed pipeline steps with one-line failures; an output directory that appears whole or not at all.

::

    staged_output(out/demo)   ->  out/.tmp-demo-<pid>-XXXX/ (every artifact written here, each file atomically)
        Steps.step("quantize") ...  prints "[2/7] quantize ..." then "      done in 2.1 s"
    success: out/.tmp-demo-XXXX/ renamed to out/demo (a previous run's out/demo is swapped out, then removed)
    failure: out/.tmp-demo-XXXX/ removed; out/demo untouched; StepFailedError carries the step and the cause
    SIGINT / SIGTERM: the same as a failure (sigterm_as_interrupt turns SIGTERM into KeyboardInterrupt)
    SIGKILL / power loss: the next run removes staging directories whose process is gone

Why a staging directory rather than atomic files alone: the artifacts belong together (the engine, its
sidecar, the quantization state and the report describe one run), so a reader must never see a new
engine next to an old report. Each file inside is still written with ``build.atomic`` helpers.

Example:
    >>> import io, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> steps = Steps(["write"], stream=io.StringIO())
    >>> with staged_output(out) as stage, steps.step("write"):
    ...     _ = (stage / "a.txt").write_text("ok")
    >>> (out / "a.txt").read_text()
    'ok'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fx2trt_pipeline.atomic_io import TEMP_PREFIX, fsync_directory
from fx2trt_pipeline.errors import ConfigError, StepFailedError, one_line

#: The run manifest; its presence marks a directory as an fx2trt output that a new run may replace.
MANIFEST_NAME = "fx2trt_run.json"


@dataclass
class StepRecord:
    """What one step did: name, wall seconds, status (``ok`` / ``failed``) and notes it printed."""

    name: str
    seconds: float = 0.0
    status: str = "pending"
    notes: list[str] = field(default_factory=list)
    started: float = 0.0  # time.perf_counter() when the step began


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback (relative to the working directory)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    path = Path(frame.filename)
    with contextlib.suppress(ValueError):
        path = path.resolve().relative_to(Path.cwd())
    return f"{path}:{frame.lineno}"


def error_line(exc: BaseException) -> str:
    """``"<ErrorType>: <first line of the message> [at file:line]"``.

    Example:
        >>> error_line(ValueError("bad\\nmore"))
        'ValueError: bad'
    """
    first = one_line(str(exc))  # the first line, without terminal escape codes (torch.load's messages carry some)
    where = _where(exc)
    return f"{type(exc).__name__}: {first}" + (f" [at {where}]" if where else "")


def failure_line(step: str, index: int, total: int, exc: BaseException) -> str:
    """The one line printed when a step fails: the step, then :func:`error_line`.

    Example:
        >>> failure_line("quantize", 2, 7, ValueError("bad\\nmore"))
        "step 2/7 'quantize' failed: ValueError: bad"
    """
    return f"step {index}/{total} '{step}' failed: {error_line(exc)}"


class Steps:
    """Prints numbered steps with their times and records them (for the manifest and the report).

    Args:
        names: every step, in order (for the ``[i/n]`` counter).
        stream: where progress goes (default stdout); ``quiet`` prints nothing.
    """

    def __init__(self, names: list[str], stream: TextIO | None = None, quiet: bool = False) -> None:
        self.names = list(names)
        self.records = {name: StepRecord(name) for name in names}
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        #: Progress bars (calibration) only when a person watches a terminal.
        self.interactive = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._current: StepRecord | None = None

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """Print a progress line under the running step (and keep it in its record)."""
        if self._current is not None:
            self._current.notes.append(text)
        self._print(f"      {text}")

    @contextlib.contextmanager
    def step(self, name: str, description: str = "") -> Iterator[StepRecord]:
        """Run one step: prints its header, its time on success, and raises :class:`StepFailedError` on error."""
        if name not in self.records:
            raise ConfigError(f"Unknown step {name!r}; steps are {self.names}")
        index = self.names.index(name) + 1
        record = self.records[name]
        self._print(f"[{index}/{len(self.names)}] {name}" + (f": {description}" if description else ""))
        self._current = record
        record.started = start = time.perf_counter()
        try:
            yield record
        except StepFailedError:
            raise
        except Exception as exc:
            record.status, record.seconds = "failed", time.perf_counter() - start
            total = len(self.names)
            raise StepFailedError(name, index, total, exc, failure_line(name, index, total, exc)) from exc
        finally:
            self._current = None
        record.status, record.seconds = "ok", time.perf_counter() - start
        self._print(f"      done in {record.seconds:.1f} s")

    @property
    def total_seconds(self) -> float:
        """Seconds of all finished steps."""
        return sum(r.seconds for r in self.records.values())

    def to_list(self) -> list[dict[str, object]]:
        """Records as JSON-friendly dicts, in step order."""
        return [
            {"name": r.name, "seconds": round(r.seconds, 3), "status": r.status, "notes": r.notes}
            for r in (self.records[n] for n in self.names)
        ]


def check_output_dir(output: Path, force: bool = False) -> None:
    """Refuse, before any work, to replace something that is not a previous fx2trt output.

    An existing directory is replaced when it is empty, holds a run manifest, or ``force`` is set.

    Raises:
        ConfigError: ``output`` is a file, or a non-empty directory of something else (without ``force``).
    """
    if output.exists() and not output.is_dir():
        raise ConfigError(f"Output path {output} exists and is not a directory; choose another --output")
    if output.is_dir() and not force and any(output.iterdir()) and not (output / MANIFEST_NAME).is_file():
        raise ConfigError(
            f"Output directory {output} is not empty and was not written by fx2trt; choose another "
            "--output or pass --force to replace it"
        )


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` (like Ctrl-C), so cleanup runs.

    ``kill``, ``timeout`` and job schedulers stop a process with SIGTERM, whose default action ends it
    without unwinding: no ``finally`` block runs and a staging directory would stay behind. Only the
    main thread can install handlers; elsewhere the block runs unchanged.
    """

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_stages(output: Path) -> list[Path]:
    """Remove staging directories of ``output`` left by runs that were killed (their process is gone).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / f"{TEMP_PREFIX}run-999999999-abcd").mkdir()
        >>> [p.name for p in remove_stale_stages(root / "run")]
        ['.tmp-run-999999999-abcd']
    """
    removed = []
    for path in Path(output).parent.glob(f"{TEMP_PREFIX}{Path(output).name}-*"):
        pid = path.name[len(f"{TEMP_PREFIX}{Path(output).name}-") :].split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def staged_output(output: Path, force: bool = False) -> Iterator[Path]:
    """Yield a staging directory next to ``output``; publish it as ``output`` only if the block succeeds.

    On any exception (KeyboardInterrupt included) the staging directory and any parent directories
    created for it are removed, and ``output`` is left as it was. On success a previous ``output`` is
    moved aside, the staging directory renamed into place, and the old one deleted: a reader sees the
    old run or the new one (or, for the instant between the two renames, no directory), never a mix.
    """
    output = Path(output)
    check_output_dir(output, force)
    created = [p for p in reversed(output.parents) if not p.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(output)
    stage = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{output.name}-{os.getpid()}-", dir=output.parent))
    old: Path | None = None
    try:
        yield stage
        os.chmod(stage, 0o755)  # mkdtemp makes it 0o700; the published directory is an ordinary one
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}old-{output.name}-", dir=output.parent))
            old.rmdir()
            os.replace(output, old)
        os.replace(stage, output)
    except BaseException:
        if old is not None and not output.exists():
            os.replace(old, output)  # the publishing rename failed: put the previous run back
        shutil.rmtree(stage, ignore_errors=True)
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only if still empty
        raise
    fsync_directory(output.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "MANIFEST_NAME",
    "StepRecord",
    "Steps",
    "check_output_dir",
    "error_line",
    "failure_line",
    "remove_stale_stages",
    "sigterm_as_interrupt",
    "staged_output",
]
