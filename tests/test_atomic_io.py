"""Atomic writes leave either the old file or the complete new one, and never a temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fx2trt_pipeline import atomic_io as atomic
from fx2trt_pipeline.atomic_io import TEMP_PREFIX, atomic_open, atomic_write_bytes, atomic_write_text


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_write_creates_parents_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_text(path, "second")
    assert path.read_bytes() == b"second"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert _temps(path.parent) == []


def test_failure_mid_write_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    path = tmp_path / "engine.plan"
    path.write_bytes(b"old complete engine")
    with pytest.raises(RuntimeError, match="disk died"):
        with atomic_open(path) as handle:
            handle.write(b"half of the new eng")
            raise RuntimeError("disk died")
    assert path.read_bytes() == b"old complete engine"
    assert _temps(tmp_path) == []


def test_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: str, dst: str) -> None:
        raise OSError("rename refused")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write_bytes(tmp_path / "new.plan", b"data")
    assert list(tmp_path.iterdir()) == []


def test_temp_file_lives_in_destination_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # os.replace is atomic only within one file system, so the temp file must be a sibling.
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(str(src))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    atomic_write_bytes(tmp_path / "x.bin", b"1")
    assert Path(seen[0]).parent == tmp_path and Path(seen[0]).name.startswith(TEMP_PREFIX + "x.bin.")
