"""benchmarks/early_windows.py averages each traced statistic over its windows of steps (steps a to b - 1), then
over the seeds, skips windows past a run's trace, and rejects bad arguments by name."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import early_windows  # noqa: E402


def _file(path: Path, traces: list[list[float]]) -> Path:
    runs = [{"seed": s, "rows": {stat: list(t) for stat in early_windows.STATS}} for s, t in enumerate(traces)]
    path.write_text(json.dumps({"runs": runs}))
    return path


def test_window_means_over_steps_then_seeds(tmp_path: Path) -> None:
    # step k holds k (seed 0) and 10 k (seed 1); steps 1-2 average 1.5 and 15, steps 3-4 3.5 and 35
    path = _file(tmp_path / "a.json", [[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    means = early_windows.window_means(path, [1, 3, 5])
    assert means["alpha"] == [pytest.approx(8.25), pytest.approx(19.25)]
    # a window past the traces is nan, not an average of fewer steps
    assert math.isnan(early_windows.window_means(path, [1, 3, 6])["l1"][1])


def test_table_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _file(tmp_path / "a.json", [[1.0, 1.0, 1.0, 1.0]])
    b = _file(tmp_path / "b.json", [[2.0, 2.0, 2.0, 2.0]])
    out = tmp_path / "t.md"
    assert early_windows.main([f"x={a}", f"y={b}", "--edges", "1", "3", "5", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| alpha | x | 1.0000 | 1.0000 |" in text and "| loss | y | 2.000 | 2.000 |" in text
    assert text == capsys.readouterr().out
    bad_edges = (["5", "3"], ["1", "3", "3"], ["0", "3"])  # decreasing, an empty window, a step 0
    for bad in ([f"x={tmp_path / 'missing.json'}"], [str(a)], *([f"x={a}", "--edges", *e] for e in bad_edges)):
        with pytest.raises(SystemExit):
            early_windows.main(bad)
