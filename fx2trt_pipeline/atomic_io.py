"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

The bytes go to a temporary file in the destination's own directory (``os.replace`` is atomic only
within one file system), are flushed and fsync'ed, and the temporary file is renamed over the
destination. The directory is fsync'ed afterwards so the rename itself survives a power cut. On any
failure the temporary file is removed and the destination is left untouched. Use this helper for
every artifact the pipeline writes (engines, metadata sidecars, timing caches, ONNX files, reports).

Example:
    >>> import json, tempfile, pathlib
    >>> from fx2trt_pipeline.atomic_io import atomic_write_bytes, atomic_write_text
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = atomic_write_bytes(d / "model.plan", b"engine bytes")
    >>> atomic_write_text(d / "model.plan.json", json.dumps({"ok": True})).read_text()
    '{"ok": true}'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Union

PathLike = Union[str, "os.PathLike[str]"]

#: Prefix of temporary files, so that a crashed writer's leftovers are recognisable (and ignorable).
TEMP_PREFIX = ".tmp-"


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (best effort where directories cannot be opened)."""
    # Persist the rename; not every platform/file system allows opening a directory (Windows), and
    # there the rename is as durable as the OS makes it anyway.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Open a temporary binary file that replaces ``path`` when the ``with`` block ends without error.

    Args:
        path: destination file; its parent directory is created when missing.
        mode: permission bits of the final file (``mkstemp`` would otherwise leave it at 0o600).

    Yields:
        A binary file object to write to.

    Raises:
        OSError: the file could not be written or renamed; the destination is unchanged and the
            temporary file is removed.

    Example:
        >>> with atomic_open("example.bin") as f:
        ...     _ = f.write(b"part 1"), f.write(b"part 2")
        >>> Path("example.bin").read_bytes()
        b'part 1part 2'
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + dest.name + ".", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-write must not leave a temp file behind either.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_directory(dest.parent)


def atomic_write_bytes(path: PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    Example:
        >>> atomic_write_bytes("cache.bin", b"\\x00\\x01").read_bytes()
        b'\\x00\\x01'
    """
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path.

    Example:
        >>> atomic_write_text("report.txt", "ok\\n").read_text()
        'ok\\n'
    """
    return atomic_write_bytes(path, text.encode(encoding))
