"""Atomic, verifiable checkpoints: a crash at any moment leaves the previous checkpoint loadable.

Layout of a run's ``checkpoints/`` folder::

    step_0000040/            a complete checkpoint (only complete ones ever carry this name)
        model.pt             model.state_dict() saved in eval mode: the parameters hold the average x
        train_state.pt       optimizer, LR scheduler, RNG states, step, tokens, skip counters, y_params
                             (the training-mode parameters y, so a resume needs no x -> y rebuild)
        config.json          the run's resolved configuration
        COMPLETE             JSON: step and the sha256 of every other file; written last
    .tmp-step_0000060-123/   a save in progress (or one a crash interrupted): never loaded, purged later

A save writes everything into a ``.tmp-*`` folder, fsyncs each file, writes ``COMPLETE``, fsyncs, then
renames the folder to ``step_*`` (a single atomic rename) and fsyncs the parent. Older checkpoints are
purged only after the new one is in place, keeping the newest ``keep`` (>= 2).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import fsync_dir, fsync_file
from .errors import UserError
from .hashing import sha256_file

__all__ = ["Checkpoint", "latest_valid", "list_complete", "load", "purge", "save", "verify"]

COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d{7,})$")
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    step: int
    path: Path


def step_dirname(step: int) -> str:
    return f"step_{step:07d}"


def _write_files(tmp: Path, payload: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """Write every file of a checkpoint into ``tmp`` (fsynced) and return their sha256s."""
    hashes = {}
    for name, obj in payload.items():
        torch.save(obj, tmp / name)
        fsync_file(tmp / name)
        hashes[name] = sha256_file(tmp / name)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    fsync_file(tmp / "config.json")
    hashes["config.json"] = sha256_file(tmp / "config.json")
    return hashes


def _write_marker(tmp: Path, step: int, hashes: dict[str, str]) -> None:
    (tmp / COMPLETE).write_text(json.dumps({"step": step, "sha256": hashes}, indent=2, sort_keys=True))
    fsync_file(tmp / COMPLETE)
    fsync_dir(tmp)


def save(root: Path, step: int, payload: dict[str, Any], config: dict[str, Any], keep: int = 2) -> Checkpoint:
    """Write a checkpoint for ``step`` atomically, then purge all but the newest ``keep``.

    ``payload`` maps file names (``model.pt``, ``train_state.pt``) to objects for ``torch.save``. Saving a
    step that already has a complete checkpoint keeps the existing one (a run is deterministic, so the
    state is the same) and returns it.
    """
    if keep < 2:
        raise ValueError(f"keep must be >= 2 so a failed save never leaves no checkpoint, got {keep}")
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dirname(step)
    if final.exists() and verify(final) is not None:
        return Checkpoint(step, final)
    tmp = root / f"{_TMP_PREFIX}{step_dirname(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        hashes = _write_files(tmp, payload, config)
        _write_marker(tmp, step, hashes)
        if final.exists():  # an unverifiable leftover under the final name: move it out of the way first
            final.rename(root / f"{_TMP_PREFIX}stale-{final.name}-{os.getpid()}")
        tmp.rename(final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    purge(root, keep)
    return Checkpoint(step, final)


def verify(path: Path, *, check_hashes: bool = True) -> int | None:
    """The checkpoint's step if ``path`` is complete (marker present, files match their sha256); else None."""
    marker = path / COMPLETE
    try:
        info = json.loads(marker.read_text())
        step = int(info["step"])
        hashes = dict(info["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    match = _STEP_DIR.match(path.name)
    if match is None or int(match.group(1)) != step:
        return None
    for name, expected in hashes.items():
        file = path / name
        if not file.is_file():
            return None
        if check_hashes and sha256_file(file) != expected:
            return None
    return step


def list_complete(root: Path, *, check_hashes: bool = False) -> list[Checkpoint]:
    """Complete checkpoints under ``root``, oldest first. Temporary and partial folders are ignored."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir() and _STEP_DIR.match(child.name):
            step = verify(child, check_hashes=check_hashes)
            if step is not None:
                found.append(Checkpoint(step, child))
    return sorted(found, key=lambda c: c.step)


def latest_valid(root: Path) -> Checkpoint | None:
    """The newest checkpoint whose marker exists and whose files match their hashes (None if there is none)."""
    for ckpt in reversed(list_complete(root, check_hashes=False)):
        if verify(ckpt.path, check_hashes=True) is not None:
            return ckpt
        warnings.warn(f"checkpoint {ckpt.path} fails its sha256 check; trying an older one", stacklevel=2)
    return None


def purge(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and leftovers of interrupted saves.

    An old checkpoint is first renamed out of the ``step_*`` namespace (atomic), then deleted, so a crash
    mid-delete leaves a ``.tmp-*`` leftover, never a half-deleted ``step_*`` folder. A failed delete is a
    warning, never an exception: losing a purge costs disk, not the run.
    """
    complete = list_complete(root)
    doomed = []
    for ckpt in complete[:-keep] if len(complete) > keep else []:
        aside = root / f"{_TMP_PREFIX}purge-{ckpt.path.name}-{os.getpid()}"
        try:
            ckpt.path.rename(aside)
            doomed.append(aside)
        except OSError as exc:
            warnings.warn(f"could not delete old checkpoint {ckpt.path}: {exc}", stacklevel=2)
    mine = f"-{os.getpid()}"
    doomed += [p for p in root.iterdir() if p.name.startswith(_TMP_PREFIX) and not p.name.endswith(mine)]
    for path in doomed:
        try:
            shutil.rmtree(path)
        except OSError as exc:
            warnings.warn(f"could not delete old checkpoint {path}: {exc}", stacklevel=2)


def load(ckpt: Checkpoint, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint's files: ``{"model": ..., "train_state": ..., "config": ...}`` (tensors only, no pickles)."""
    try:
        return {
            "model": torch.load(ckpt.path / "model.pt", map_location=map_location, weights_only=True),
            "train_state": torch.load(ckpt.path / "train_state.pt", map_location=map_location, weights_only=True),
            "config": json.loads((ckpt.path / "config.json").read_text()),
        }
    except (OSError, RuntimeError, ValueError) as exc:
        raise UserError(f"cannot read checkpoint {ckpt.path}: {exc}") from exc
