"""The one atomic-write helper (the old content or the new, never a torn file, no leftovers on failure) and
the one metrics.jsonl reader."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sfplus_lab.atomic import atomic_dir, atomic_path, write_atomic
from sfplus_lab.errors import UserError
from sfplus_lab.metrics import read_metrics


def test_write_replaces_text_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_atomic(path, "old")
    write_atomic(path, "new ü")
    assert path.read_text(encoding="utf-8") == "new ü"
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        assert list(tmp_path.glob("*.json")) == [path]  # the write in progress has no .json suffix
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_mode_is_applied_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    write_atomic(path, "x", mode=0o640)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_folder_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "export"
    with pytest.raises(OSError), atomic_dir(out) as tmp:
        (tmp / "a.bin").write_bytes(b"a")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "a.bin").write_bytes(b"a")
        (tmp / "b.json").write_text("{}")
        assert not out.exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "b.json"] and list(tmp_path.iterdir()) == [out]


def test_the_metrics_reader_skips_a_torn_last_line_and_names_a_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_metrics(path) == []
    path.write_text('{"step": 1, "loss": 3.0}\n\n[1, 2]\n{"step": 2, "loss": 2.5}\n{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}]
    path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "lo\n{"step": 3, "loss": 2.5}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: not a JSON line"):
        read_metrics(path)
