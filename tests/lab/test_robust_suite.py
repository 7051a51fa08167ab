"""The robustness suite's command on its cheapest problem: a results file, a table, clear errors."""

from __future__ import annotations

import json
import math

import pytest

from sfplus_lab.robust.suite import CONFIGS, main, run_one, run_suite


def test_one_run_reports_initial_final_and_divergence():
    r = run_one("det_lsq", 0, "default", CONFIGS["default"])
    assert math.isfinite(r["initial"]) and math.isfinite(r["final"])
    assert r["final"] < r["initial"] and not r["diverged"] and r["alpha_max"] > 0
    paper = run_one("det_lsq", 0, "paper", CONFIGS["paper"])
    assert paper["diverged"], "the paper's update diverges on this problem (docs/algorithm.md)"


def test_suite_writes_results_and_summary(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--problems", "det_lsq", "--configs", "default", "paper", "--seeds", "2",
                 "--no-adamw"]) == 0  # fmt: skip
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["table"]["det_lsq"]["default"]["diverged"] == 0 and doc["table"]["det_lsq"]["paper"]["diverged"] == 2
    assert len(doc["runs"]) == 4 and doc["meta"]["defaults"]["max_step_ratio"] is None
    assert "| det_lsq" in (tmp_path / "summary.md").read_text()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--seeds", "0"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--problems", "nope"])


def test_run_suite_tunes_adamw_over_its_grid():
    doc = run_suite(["det_lsq"], ["default"], seeds=1, adamw=True, log=lambda _: None)
    cell = doc["table"]["det_lsq"]["adamw-tuned"]
    assert cell["best_lr"] in cell["sweep"] and cell["seeds"] == 1
