"""benchmarks/quickstart_traces.py keeps every other step and the last one, and records each run's final
validation loss at x, for ScheduleFree+ runs and for runs of other optimizers (no alpha)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quickstart_traces  # noqa: E402


def _run(folder: Path, steps: int, alpha: bool) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"optim": {"weight_decay": 10.0}}))
    rows = []
    for k in range(1, steps + 1):
        row = {"kind": "train", "step": k, "tokens": 64 * k, "loss": 3.0 - 0.01 * k}
        if alpha:
            row.update(alpha=0.01, inner=0.0, l1=5.0, e_hat=5.0, c=1.0 / k, beta=0.9)
        rows.append(row)
        if k % 5 == 0:
            rows.append({"kind": "eval", "step": k, "val_loss": 3.0 - 0.01 * k})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_last_step_and_finals_for_both_kinds_of_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ours, theirs = _run(tmp_path / "a", 10, alpha=True), _run(tmp_path / "b", 10, alpha=False)
    out = tmp_path / "out"
    assert quickstart_traces.main([f"{ours}:sfplus", f"{theirs}:adamw", "--out", str(out)]) == 0
    with open(out / "sfplus.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 3, 5, 7, 9, 10]
    assert rows[-1]["val_loss_at_x"] == str(3.0 - 0.1) and float(rows[-1]["alpha2_lambda"]) == pytest.approx(1e-3)
    finals = json.loads((out / "finals.json").read_text())
    assert finals["sfplus"] == {"step": 10, "val_loss_at_x": pytest.approx(2.9), "alpha_last": 0.01}
    assert finals["adamw"]["alpha_last"] is None and finals["adamw"]["val_loss_at_x"] == pytest.approx(2.9)
