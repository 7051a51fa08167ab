"""Where a benchmark number came from: commit, hardware, library versions, date.

Every results file carries this block so that a figure in ``benchmarks/RESULTS.md`` can be traced to
the exact code and machine that produced it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_REPO = Path(__file__).resolve().parents[3]


def _git(*args: str) -> str | None:
    """Output of a git command in the repository (None outside a checkout); not stripped (porcelain columns)."""
    try:
        out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_meta(device: str = "cpu") -> dict[str, Any]:
    """A JSON-able description of the code, the libraries and the machine a benchmark ran on.

    ``dirty`` lists the changed tracked files under ``src/`` (the code being measured), so a number
    taken with uncommitted edits says so.
    """
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "src")
    meta: dict[str, Any] = {
        "commit": commit,
        "src_dirty": sorted(line[3:] for line in dirty.splitlines() if line.strip()) if dirty else [],
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "schedulefree": _version("schedulefree"),
        "transformers": _version("transformers"),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        meta["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        meta["cuda"] = torch.version.cuda
    return meta
