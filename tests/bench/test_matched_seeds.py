"""benchmarks/matched_seeds.py reads each side's seeds from the three kinds of result file and compares the
default with the baseline whose mean is lowest."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import matched_seeds  # noqa: E402


def _files(tmp_path: Path) -> None:
    (tmp_path / "rerun.json").write_text(json.dumps({"sizes": {"20k": {"finals": {"sfplus@100": [1.0, 1.2, 1.1]}}}}))
    (tmp_path / "baseline_seeds.json").write_text(json.dumps(
        {"run-a": {"finals": {"100": {"0": 1.05, "1": 1.15}}}, "run-b": {"finals": {"100": {"0": 1.3, "1": 1.5}}}}))
    (tmp_path / "results.json").write_text(json.dumps({"sizes": {"20k": {"cells": [
        {"method": "sf-adamw", "budget": 100.0, "final_pooled": [1.2, 1.4]},
        {"method": "sf-adamw", "budget": 20.0, "final_pooled": [9.0, 9.0]}]}}}))


def _cells(tmp_path: Path, baselines: list[dict]) -> Path:
    ours = {"label": "default", "file": "rerun.json", "size": "20k", "key": "sfplus@100"}
    spec = [{"cell": "20k / 100", "ours": ours, "baselines": baselines}]
    (tmp_path / "cells.json").write_text(json.dumps(spec))
    return tmp_path / "cells.json"


def test_each_kind_of_file_gives_its_seeds_and_the_lowest_baseline_is_the_reference(tmp_path: Path) -> None:
    _files(tmp_path)
    cells = _cells(tmp_path, [{"label": "a", "file": "baseline_seeds.json", "run_id": "run-a", "budget": 100},
                              {"label": "b", "file": "baseline_seeds.json", "run_id": "run-b", "budget": 100},
                              {"label": "c", "file": "results.json", "size": "20k", "method": "sf-adamw",
                               "budget": 100}])  # fmt: skip
    matched_seeds.main([str(cells), "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    (row,) = json.loads((tmp_path / "out" / "matched_seeds.json").read_text())
    assert row["best"] == "a" and row["baselines"]["c"]["mean"] == pytest.approx(1.3)
    assert row["mean_diff_pct"] == pytest.approx(100 * (1.1 / 1.1 - 1), abs=1e-9)
    assert row["half_range_ratio"] == pytest.approx(0.2 / 0.1)
    assert row["sd_ratio"] == pytest.approx(0.1 / math.sqrt(0.005))
    lo, hi = row["sd_ratio_interval"]
    assert lo < row["sd_ratio"] < hi
    assert "| 20k / 100 | 1.1000 ±0.1000 (sd 0.1000, n=3) |" in (tmp_path / "out" / "matched_seeds.md").read_text()


@pytest.mark.parametrize("source, message", [
    ({"label": "x", "file": "nope.json", "run_id": "run-a", "budget": 100}, "nope.json: no such file"),
    ({"label": "x", "file": "baseline_seeds.json", "run_id": "run-z", "budget": 100}, "has no 'run-z'"),
    ({"label": "x", "file": "results.json", "size": "20k", "method": "wsd", "budget": 100}, "has no 'wsd at 100'"),
])  # fmt: skip
def test_a_missing_source_is_named(tmp_path: Path, source: dict, message: str) -> None:
    _files(tmp_path)
    with pytest.raises(SystemExit, match=message):
        matched_seeds.main([str(_cells(tmp_path, [source])), "--root", str(tmp_path), "--out", str(tmp_path / "o")])


def test_a_side_with_one_seed_is_refused(tmp_path: Path) -> None:
    _files(tmp_path)
    (tmp_path / "baseline_seeds.json").write_text(json.dumps({"run-a": {"finals": {"100": {"0": 1.05}}}}))
    cells = _cells(tmp_path, [{"label": "a", "file": "baseline_seeds.json", "run_id": "run-a", "budget": 100}])
    with pytest.raises(SystemExit, match="a has 1 seed"):
        matched_seeds.main([str(cells), "--root", str(tmp_path), "--out", str(tmp_path / "o")])


def test_ours_names_the_column(tmp_path: Path) -> None:
    _files(tmp_path)
    cells = _cells(tmp_path, [{"label": "a", "file": "baseline_seeds.json", "run_id": "run-a", "budget": 100}])
    matched_seeds.main([str(cells), "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--ours", "R = 0.5"])
    text = (tmp_path / "o" / "matched_seeds.md").read_text()
    assert "| cell | R = 0.5 | baselines |" in text and "R = 0.5 against the baseline" in text
