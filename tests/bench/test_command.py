"""``sfplus bench --quick`` end to end: a valid results.json with every method and budget, figures, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sfplus_lab.cli import main
from sfplus_lab.optim_factory import is_tuned


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "quick"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_writes_a_complete_results_file(quick_out: Path) -> None:
    doc = json.loads((quick_out / "results.json").read_text())
    assert doc["benchmark"] == "quality" and doc["complete"] is True
    assert doc["meta"]["commit"] and doc["meta"]["torch"]
    cfg = doc["sfplus_config"]  # the bench's headline is the library's default, untouched
    assert cfg["name"] == "sfplus" and cfg["preset"] == "robust" and cfg["max_step_growth"] == 0.05
    block = doc["sizes"]["3k"]
    cells = {(c["budget"], c["method"]): c for c in block["cells"]}
    methods = ("sfplus", "sfplus-gamma1", "adamw-wsd", "adamw-cosine", "adamw-linear", "sf-adamw")
    assert set(cells) == {(b, m) for b in (2.0, 5.0, 10.0) for m in methods}
    for (_budget, method), cell in cells.items():
        assert len(cell["seeds"]) >= 1 and set(cell["per_source_mean"]) == {"austen-persuasion", "melville-mobydick"}
        if is_tuned(method):
            assert set(cell["sweep"]) == {"0.008", "0.016"}  # the quick grid, 1e-3 * 2**3 and 2**4
    assert len(cells[(10.0, "sfplus")]["seeds"]) == 2 and cells[(10.0, "sfplus")]["final_pooled_spread"] is not None
    assert math.isfinite(cells[(10.0, "sfplus")]["final_pooled_mean"])
    ttt = {(t["budget"], t["baseline"]) for t in block["time_to_target"]}
    assert (10.0, "adamw-wsd") in ttt and (2.0, "sf-adamw") in ttt
    extra = block["time_to_target_extra"]["sfplus-gamma1"]  # the comparison configuration gets the same table
    assert {(t["budget"], t["baseline"]) for t in extra} == ttt and all(len(t["reached_per_seed"]) == 1 for t in extra)
    assert {"sfplus (seed 0)", "sfplus (seed 1)"} <= set(block["anytime"])
    for name in ("anytime", "schedules", "sweeps", "time_to_target"):
        assert (quick_out / f"{name}_3k.png").stat().st_size > 1000
    assert all((quick_out / r["file"]).exists() for r in doc["runs"])


def test_rerun_resumes_without_training(quick_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = json.loads((quick_out / "results.json").read_text())
    assert main(["bench", "--quick", "--out", str(quick_out)]) == 0
    assert "resuming" in capsys.readouterr().out
    after = json.loads((quick_out / "results.json").read_text())
    assert after["sizes"]["3k"]["cells"] == before["sizes"]["3k"]["cells"]
    assert after["cpu_seconds_of_runs"] == before["cpu_seconds_of_runs"]  # nothing was retrained


def test_runs_from_other_settings_are_not_mixed_in(quick_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--seq-len", "16", "--out", str(quick_out), "--analyze-only"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_bad_data_path_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--quick", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.txt" in err and "Traceback" not in err


def test_text_too_short_to_evaluate_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 130 bytes: 7 validation tokens, fewer than one evaluation window; this used to end in a ZeroDivisionError
    monkeypatch.setenv("SFPLUS_CACHE", str(tmp_path / "cache"))  # keep the token cache out of the user's home
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world. " * 10)
    code = main(["bench", "--quick", "--data", str(tiny), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no validation text long enough" in err and "tiny 7 tokens" in err and "Traceback" not in err
    assert not list((tmp_path / "o" / "runs").glob("*.json"))  # nothing was trained
