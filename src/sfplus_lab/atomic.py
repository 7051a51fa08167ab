"""Atomic writes: write aside, fsync, rename, so a reader sees the old file or folder or the new one, never a torn one.

Every file the lab writes that another process (or a resumed run) reads goes through here: config.json,
metrics.jsonl when a resume truncates it, the plots, the bench's run and results files, the token cache,
the fetched corpus and exported weights. Checkpoints keep their own protocol (``checkpoint.py``: a
``COMPLETE`` marker with sha256s) on top of ``fsync_file`` and ``fsync_dir``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "fsync_dir", "fsync_file", "write_atomic"]


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry durable; some filesystems refuse fsync on directories, which is harmless."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it is fsynced (and given ``mode``) and renamed
    over ``path``, on an exception deleted. The name is hidden and has no suffix of its own, so globs such as
    ``*.json`` never pick up a write in progress (pass the format explicitly where a writer guesses it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically."""
    with atomic_path(path, mode=mode) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A new temporary folder beside ``path`` to fill; on success its files are fsynced and it is renamed to
    ``path`` (which must not exist, or be an empty folder), on an exception deleted."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            fsync_file(f)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
