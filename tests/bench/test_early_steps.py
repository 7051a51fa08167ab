"""benchmarks/early_steps.py: its evaluations are the benchmark's own at the same step (same batches, same
initialisation), every step's statistics are kept, and malformed input is a named error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import early_steps  # noqa: E402

from sfplus_lab.bench.config import quick_config  # noqa: E402
from sfplus_lab.bench.runner import Job, run_job  # noqa: E402
from sfplus_lab.optim_factory import METHODS  # noqa: E402


@pytest.fixture(scope="module")
def cfg():
    return quick_config(budgets=(1.0,), batch_size=4, seq_len=16, eval_tokens=512)


@pytest.fixture(autouse=True)
def _forget_probes():
    """``--variant`` registers its probe in the process's registry; other tests read the registry whole."""
    yield
    METHODS.pop("w2", None)


@pytest.fixture
def results(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"config": cfg.to_dict()}))
    return path


def test_evaluations_equal_the_benchmarks_at_the_same_step(tmp_path: Path, cfg, results: Path) -> None:
    job = Job(size="3k", method="sfplus", lr=None, k=None, seed=1, kind="anytime", budgets=[1.0], horizon_tpp=1.0,
              phase="sfplus")  # fmt: skip
    bench = run_job(job, cfg)
    steps = bench["steps"]["1"]
    out = tmp_path / "out"
    rc = early_steps.main([str(results), "--size", "3k", "--seeds", "2", "--steps", str(steps), "--evals", "5",
                           str(steps), "--keep", "10", "--variant", 'w2={"warmup_steps": 2}', "--configs", "sfplus",
                           "w2", "--out", str(out)])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "early_steps.json").read_text())
    runs = {(r["config"], r["seed"]): r for r in doc["runs"]}
    assert sorted(runs) == [("sfplus", 0), ("sfplus", 1), ("w2", 0), ("w2", 1)]
    assert runs["sfplus", 1]["evals"][str(steps)] == bench["finals"]["1"]["pooled"]  # bit for bit
    assert runs["w2", 1]["evals"][str(steps)] != runs["sfplus", 1]["evals"][str(steps)]
    for run in runs.values():
        assert run["steps"] == steps and set(run["evals"]) == {"5", str(steps)}
        assert {k: len(v) for k, v in run["rows"].items()} == {k: 10 for k in early_steps.STATS}
        assert 1 <= run["alpha_peak_step"] <= steps and run["alpha_peak"] > 0
    assert [(s["config"], s["step"], s["n"]) for s in doc["summary"]] == [
        ("sfplus", 5, 2), ("sfplus", steps, 2), ("w2", 5, 2), ("w2", steps, 2)]
    assert "| w2 | 5 |" in (out / "early_steps.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--size", "96k", "--steps", "3", "--evals", "3"], "not one of the file's sizes"),
    (["--size", "3k", "--steps", "3", "--evals", "4"], "--evals must lie in 1..--steps"),
    (["--size", "3k", "--steps", "3", "--evals", "3", "--configs", "adamw-wsd"], "not a ScheduleFree+ configuration"),
    (["--size", "3k", "--steps", "3", "--evals", "3", "--configs", "nope"], "not a ScheduleFree+ configuration"),
])  # fmt: skip
def test_bad_input_is_a_named_error(tmp_path: Path, results: Path, capsys, args: list[str], message: str) -> None:
    assert early_steps.main([str(results), *args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_results_file_is_a_named_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "none.json"
    assert early_steps.main([str(missing), "--size", "3k", "--steps", "3", "--evals", "3", "--out", str(tmp_path)]) == 2
    assert "none.json" in capsys.readouterr().err
