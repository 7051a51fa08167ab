"""metrics.jsonl: one JSON object per line, appended as the run goes, truncated back to a checkpoint on resume.

Train rows: ``{"kind": "train", "step", "tokens", "loss", "tok_per_s", "elapsed_s", ...}`` plus the optimizer's
scalars (ScheduleFree+: ``alpha``, ``beta``, ``c``, ``inner``, ``l1``, ``e_hat``, ``skipped``, ``status``,
``num_skipped``, ``lr_max``, ``k``; baselines: ``lr``). Eval rows: ``{"kind": "eval", "step", "tokens",
"val_loss", "val_loss/<source>", ...}`` measured at x (the optimizer in eval mode).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .errors import UserError

__all__ = ["MetricsLog", "read_metrics"]


def _jsonable(value: Any) -> Any:
    """NaN and inf are not JSON: write them as null so every line parses with any JSON reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every row of a metrics file, in file order ([] when there is no file): the one reader of metrics.jsonl.

    A torn last line (the run is still writing, or was killed mid-write) is skipped; an unreadable line
    anywhere else means the file was damaged, and raises ``UserError`` naming it. Blank lines and lines that
    are not JSON objects are skipped.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(f"{path}:{number}: not a JSON line") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


class MetricsLog:
    """Appends rows to ``metrics.jsonl`` and keeps them in memory for the plots."""

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        self._file = None

    def open(self, resume_step: int | None) -> None:
        """Start a new file, or (resuming) keep only rows up to ``resume_step`` so no step is logged twice."""
        if not self.enabled:
            return
        if resume_step is None:
            self.rows = []
        else:
            self.rows = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        self._file = open(self.path, "a")  # noqa: SIM115 - held open for the run, closed in close()

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {k: _jsonable(v) for k, v in row.items()}
        self.rows.append(row)
        assert self._file is not None, "MetricsLog.open() was not called"
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Make the rows so far durable (called before each checkpoint, so a checkpoint never outruns its log)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None
