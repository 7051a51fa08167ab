"""benchmarks/late_alpha.py: the late α of a run is the mean of its trace over the last third of the steps to a
budget, and the table pairs it with that budget's final loss."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import late_alpha  # noqa: E402


def _record(method: str, seed: int, alphas: list[float], final: float) -> dict:
    steps = list(range(1, len(alphas) + 1))
    return {"job": {"id": f"x_{method}_s{seed}", "method": method, "seed": seed, "kind": "anytime"},
            "steps": {"20": len(alphas) // 2, "100": len(alphas)},
            "trace": {"step": steps, "alpha": alphas}, "finals": {"100": {"pooled": final}, "20": {"pooled": 9.0}}}


def test_late_alpha_is_the_mean_over_the_last_third_up_to_the_budget() -> None:
    rec = _record("sfplus", 0, [1.0] * 6 + [4.0, 5.0, 6.0], 2.0)  # 9 steps: the last third is steps 7-9
    assert late_alpha.late_alpha(rec, "100") == pytest.approx(5.0)
    assert late_alpha.late_alpha(rec, "20") == 1.0  # steps 3-4 of the first 4


def test_the_table_pairs_seeds_and_correlates_them(tmp_path: Path) -> None:
    runs = tmp_path / "rerun" / "runs"
    runs.mkdir(parents=True)
    for seed, (a, f) in enumerate([(0.01, 1.90), (0.02, 1.95), (0.03, 2.00)]):
        (runs / f"{seed}.json").write_text(json.dumps(_record("sfplus", seed, [a] * 9, f)))
    late_alpha.main([str(tmp_path / "rerun"), "--budget", "100", "--out", str(tmp_path / "out")])
    doc = json.loads((tmp_path / "out" / "late_alpha.json").read_text())
    (row,) = doc["configs"]
    assert row["config"] == "rerun:sfplus" and [r["seed"] for r in row["runs"]] == [0, 1, 2]
    assert row["correlation"] == pytest.approx(1.0) and doc["n_runs"] == 3
    assert "| rerun:sfplus | 3 |" in (tmp_path / "out" / "late_alpha.md").read_text()


def test_fewer_than_three_seeds_have_no_correlation() -> None:
    assert math.isnan(late_alpha.correlation([1.0, 2.0], [1.0, 2.0]))


def test_a_folder_without_runs_is_an_error_that_names_it(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="has no run files"):
        late_alpha.main([str(tmp_path), "--out", str(tmp_path / "out")])


def test_a_run_cached_in_two_folders_counts_once(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        runs = tmp_path / folder / "runs"
        runs.mkdir(parents=True)
        for seed in range(3):
            (runs / f"{seed}.json").write_text(json.dumps(_record("sfplus", seed, [0.01 * (seed + 1)] * 9, 2.0 + seed)))
    late_alpha.main([str(tmp_path / "a"), str(tmp_path / "b"), "--budget", "100", "--out", str(tmp_path / "out")])
    doc = json.loads((tmp_path / "out" / "late_alpha.json").read_text())
    assert [row["config"] for row in doc["configs"]] == ["a:sfplus"] and doc["n_runs"] == 3
