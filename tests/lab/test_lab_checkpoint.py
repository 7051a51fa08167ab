"""Checkpoints are atomic: a failure at any point of a save leaves the previous one the latest, and it verifies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from sfplus_lab import checkpoint as ck


def _payload(gen: torch.Generator, step: int) -> dict:
    return {
        "model.pt": {"w": torch.randn(8, 4, generator=gen)},
        "train_state.pt": {"step": step, "format": 1, "v": torch.randn(3, generator=gen)},
    }


def _save(root: Path, gen: torch.Generator, step: int, keep: int = 2) -> ck.Checkpoint:
    return ck.save(root, step, _payload(gen, step), {"step": step}, keep=keep)


def test_saved_checkpoint_verifies_and_loads(tmp_path, gen):
    payload = _payload(gen, 10)
    saved = ck.save(tmp_path, 10, payload, {"hello": 1})
    assert saved.path.name == "step_0000010"
    assert ck.verify(saved.path) == 10
    marker = json.loads((saved.path / ck.COMPLETE).read_text())
    assert set(marker["sha256"]) == {"model.pt", "train_state.pt", "config.json"}
    state = ck.load(ck.latest_valid(tmp_path))
    assert torch.equal(state["model"]["w"], payload["model.pt"]["w"])
    assert state["config"] == {"hello": 1}


FAILURE_POINTS = ["after_first_file", "before_marker", "before_rename"]


@pytest.mark.parametrize("where", FAILURE_POINTS)
def test_failure_mid_save_keeps_previous_checkpoint_latest(tmp_path, gen, monkeypatch, where):
    _save(tmp_path, gen, 10)
    _save(tmp_path, gen, 20)

    class Crash(RuntimeError):
        pass

    if where == "after_first_file":
        real_save, calls = torch.save, []

        def flaky_save(obj, f, *args, **kwargs):
            calls.append(f)
            if len(calls) == 2:
                raise Crash("disk full")
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(ck.torch, "save", flaky_save)
    elif where == "before_marker":
        monkeypatch.setattr(ck, "_write_marker", lambda *a, **k: (_ for _ in ()).throw(Crash("killed")))
    else:
        real_rename = Path.rename

        def flaky_rename(self, target):
            if self.name.startswith(".tmp-"):
                raise Crash("power cut")
            return real_rename(self, target)

        monkeypatch.setattr(Path, "rename", flaky_rename)
    with pytest.raises(Crash):
        _save(tmp_path, gen, 30)
    monkeypatch.undo()
    latest = ck.latest_valid(tmp_path)
    assert latest is not None and latest.step == 20
    assert ck.verify(latest.path) == 20
    assert [c.step for c in ck.list_complete(tmp_path)] == [10, 20]  # nothing purged by the failed save
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_retention_keeps_the_newest_k(tmp_path, gen):
    for step in (10, 20, 30, 40, 50):
        _save(tmp_path, gen, step, keep=2)
    assert [c.step for c in ck.list_complete(tmp_path)] == [40, 50]
    for step in (60, 70, 80):
        _save(tmp_path, gen, step, keep=3)
    assert [c.step for c in ck.list_complete(tmp_path)] == [60, 70, 80]


def test_keep_one_is_rejected(tmp_path, gen):
    with pytest.raises(ValueError, match="keep"):
        _save(tmp_path, gen, 10, keep=1)


def test_partial_and_corrupt_checkpoints_are_ignored(tmp_path, gen):
    _save(tmp_path, gen, 10)
    good = _save(tmp_path, gen, 20)
    partial = tmp_path / "step_0000030"  # a folder with the final name but no marker
    partial.mkdir()
    (partial / "model.pt").write_bytes(b"half")
    leftover = tmp_path / ".tmp-step_0000040-999999"  # a crashed save of another process
    leftover.mkdir()
    assert ck.latest_valid(tmp_path) == good
    with open(good.path / "model.pt", "r+b") as f:  # flip a byte: the sha256 no longer matches
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(UserWarning, match="sha256"):
        latest = ck.latest_valid(tmp_path)
    assert latest is not None and latest.step == 10
    ck.purge(tmp_path, keep=2)
    assert not leftover.exists()


def test_failing_delete_warns_and_does_not_crash(tmp_path, gen, monkeypatch):
    for step in (10, 20):
        _save(tmp_path, gen, step)

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ck.shutil, "rmtree", refuse)
    with pytest.warns(UserWarning, match="could not delete"):
        _save(tmp_path, gen, 30)
    monkeypatch.undo()
    assert ck.latest_valid(tmp_path).step == 30


def test_saving_an_existing_step_keeps_the_complete_one(tmp_path, gen):
    first = _save(tmp_path, gen, 10)
    before = (first.path / "model.pt").read_bytes()
    again = _save(tmp_path, gen, 10)
    assert again == first and (first.path / "model.pt").read_bytes() == before


def test_checkpoint_files_are_fsynced(tmp_path, gen, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(ck.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    _save(tmp_path, gen, 10)
    assert len(synced) >= 4  # model.pt, train_state.pt, config.json, COMPLETE (plus the folders)


SAVE_FOREVER = """
import sys
from pathlib import Path
import torch
from sfplus_lab import checkpoint as ck
gen = torch.Generator().manual_seed(0)
root = Path(sys.argv[1])
for step in range(1, 10_000):
    ck.save(root, step, {"model.pt": {"w": torch.randn(2_000_000, generator=gen)}, "train_state.pt": {"step": step}},
            {"step": step}, keep=2)
"""


def test_sigkill_during_saves_never_leaves_a_bad_checkpoint(tmp_path):
    """Kill a process that saves 8 MB checkpoints back to back: every step_* folder left behind verifies."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "step_0000003").exists():
            assert proc.poll() is None, "the saving process died on its own"
            assert time.monotonic() < deadline, "the saving process made no progress"
            time.sleep(0.01)
        time.sleep(0.15)  # land somewhere inside a later save
    finally:
        proc.kill()
        proc.wait()
    finals = [p for p in tmp_path.iterdir() if p.name.startswith("step_")]
    assert finals and all(ck.verify(p) is not None for p in finals)
    latest = ck.latest_valid(tmp_path)
    assert latest is not None and latest.step >= 3
    assert torch.load(latest.path / "model.pt", weights_only=True)["w"].shape == (2_000_000,)
