"""benchmarks/first_polyak.py: P_1 is the first step's F / ê, the same factor the optimizer's ratio bound keeps
(so α_1 = γ_1 · P_1), and the table's slope is the log-log fit over the sizes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import first_polyak  # noqa: E402

import sfplus  # noqa: E402


def test_p1_is_the_first_steps_polyak_factor() -> None:
    run = first_polyak.first_step("3k", 0, batch_size=2, seq_len=16, data=None)
    assert run["params"] == 3096
    assert run["P1"] == pytest.approx(run["loss"] / run["e_hat"])
    # step 1 of the default: γ_1 = lr · 1/warmup_steps, and nothing bounds P_1 (the ratio bound is relative to it)
    gamma_1 = 1.0 / sfplus.PRESETS["robust"]["warmup_steps"]
    assert run["alpha"] == pytest.approx(gamma_1 * run["P1"], rel=1e-6)
    # ê_1 is the bias-corrected EMA of sqrt(pi/2)·‖g‖₁ after one step: exactly that
    assert run["e_hat"] == pytest.approx(math.sqrt(math.pi / 2) * run["l1"], rel=1e-9)
    assert run == first_polyak.first_step("3k", 0, batch_size=2, seq_len=16, data=None)  # same seed, same step
    assert run["P1"] != first_polyak.first_step("3k", 1, batch_size=2, seq_len=16, data=None)["P1"]


def test_slope_recovers_a_power_law() -> None:
    assert first_polyak.slope([(1e3, 2.0), (1e4, 0.2), (1e6, 0.002)]) == pytest.approx(-1.0)
    assert first_polyak.slope([(10.0, 1.0), (1000.0, 10.0)]) == pytest.approx(0.5)


def test_cli_writes_json_and_table(tmp_path: Path) -> None:
    first_polyak.main(["--sizes", "3k", "--seeds", "0", "1", "--batch-size", "2", "--seq-len", "16",
                       "--out", str(tmp_path)])  # fmt: skip
    doc = json.loads((tmp_path / "first_polyak.json").read_text())
    assert doc["max_step_ratio"] == 0.5  # the cap column's R (--ratio)
    assert set(doc["sizes"]["3k"]["seeds"]) == {"0", "1"}
    table = (tmp_path / "first_polyak.md").read_text()
    assert "| 3k | 3,096 |" in table
    assert "slope" not in table  # one size: no fit


def test_unknown_size_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown size.*7k"):
        first_polyak.main(["--sizes", "7k", "--out", str(tmp_path)])
