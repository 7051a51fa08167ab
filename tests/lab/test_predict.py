"""``sfplus predict``: the a/sqrt(t+b)+c fit and the command on run folders (metrics.jsonl eval rows)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from sfplus_lab.cli import main
from sfplus_lab.curve_fit import fit_inverse_sqrt
from sfplus_lab.errors import UserError
from sfplus_lab.predict import predict_run, read_eval_rows


def curve(t: float, a: float = 3.0, b: float = 40.0, c: float = 2.1) -> float:
    return a / math.sqrt(t + b) + c


def write_run(root: Path, rows: list[dict], config: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "metrics.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    return root


def synthetic_rows(steps: int, every: int, noise: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for step in range(1, steps + 1):
        rows.append({"step": step, "loss": curve(step) + 0.1, "alpha": 0.01})  # train rows carry no val_loss
        if step % every == 0:
            rows.append({"step": step, "val_loss": curve(step) + rng.gauss(0.0, noise), "val_loss_austen": 9.0})
    return rows


def test_fit_recovers_noiseless_curve_exactly() -> None:
    ts = list(range(10, 301, 10))
    fit = fit_inverse_sqrt(ts, [curve(t) for t in ts])
    assert fit.a == pytest.approx(3.0, rel=1e-4) and fit.b == pytest.approx(40.0, rel=1e-3)
    assert fit.c == pytest.approx(2.1, abs=1e-5)
    assert fit(1000) == pytest.approx(curve(1000), abs=1e-6)


def test_fit_extrapolates_noisy_curve_and_resists_an_outlier() -> None:
    rng = random.Random(0)
    ts = list(range(10, 301, 10))
    ys = [curve(t) + rng.gauss(0.0, 0.005) for t in ts]
    clean = fit_inverse_sqrt(ts, ys)
    assert abs(clean(1000) - curve(1000)) < 0.01
    ys[5] += 0.5  # one bad evaluation
    robust = fit_inverse_sqrt(ts, ys)
    assert abs(robust(1000) - curve(1000)) < 0.03
    # Plain least squares (no reweighting) is pulled much further by the same outlier: what Huber buys.
    from sfplus_lab.curve_fit import _solve_linear

    a, c = _solve_linear(ts, ys, [1.0] * len(ts), robust.b, (0.0, min(ys)))
    assert abs(a / math.sqrt(1000 + robust.b) + c - curve(1000)) > abs(robust(1000) - curve(1000))


def test_fit_accepts_an_evaluation_at_step_zero() -> None:
    ts = [0] + list(range(10, 301, 10))
    fit = fit_inverse_sqrt(ts, [curve(t) for t in ts])
    assert fit.b > 0 and fit(1000) == pytest.approx(curve(1000), abs=1e-4)


def test_fit_keeps_the_asymptote_between_the_floor_and_the_lowest_loss() -> None:
    """A curve still falling in a straight line: unbounded, c would go negative (a linear extrapolation)."""
    ts = list(range(100, 301, 25))
    ys = [3.2 - 0.002 * t for t in ts]
    fit = fit_inverse_sqrt(ts, ys)
    assert 0.0 <= fit.c <= min(ys) and fit.a >= 0.0 and fit.b >= 0.0
    assert fit(10_000) >= 0.0
    high_floor = fit_inverse_sqrt(ts, ys, floor=2.0)
    assert high_floor.c >= 2.0


def test_fit_rejects_too_few_points() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        fit_inverse_sqrt([1, 2, 3], [3.0, 2.0, 1.5])


def test_predict_run_reports_error_when_complete(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", synthetic_rows(1000, every=25, noise=0.002, seed=1), {"train": {"steps": 1000}})
    p = predict_run(run, fraction=0.3)
    assert p.target_step == 1000 and p.fit_until_step == 300 and p.fit.num_points == 12
    assert p.actual is not None and abs(p.actual - curve(1000)) < 0.01
    assert abs(p.abs_error) < 0.02 and p.rel_error == pytest.approx(p.abs_error / p.actual)


def test_predict_run_in_progress_has_no_error(tmp_path: Path) -> None:
    rows = synthetic_rows(400, every=25, noise=0.0, seed=2)
    run = write_run(tmp_path / "run", rows, {"steps": 1000})
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 401, "val_lo')  # torn last line of a run still writing
    p = predict_run(run, fraction=0.3)
    assert p.target_step == 1000 and p.actual is None and p.abs_error is None
    assert p.predicted == pytest.approx(curve(1000), abs=1e-4)


def test_cli_table_json_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", synthetic_rows(600, every=20, noise=0.0, seed=3))
    assert main(["predict", str(run), "--fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "| run |" in out and "@ 600" in out
    assert main(["predict", str(run), "--json", "--metric", "val_loss_austen", "--fraction", "0.5"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["predicted"] == pytest.approx(9.0, abs=1e-6) and row["actual"] == 9.0

    assert main(["predict", str(tmp_path / "missing")]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    # Too few evaluations in the fraction: the fit takes the first 4 and says so.
    assert main(["predict", str(run), "--fraction", "0.01"]) == 0
    assert "fitted steps 1..80 (0.13 of the run)" in capsys.readouterr().err
    assert main(["predict", str(run), "--fraction", "1.5"]) == 2
    assert main(["predict", str(run), "--metric", "nope"]) == 2
    bad = write_run(tmp_path / "bad", [{"step": 1, "val_loss": 3.0}])
    (bad / "metrics.jsonl").write_text('not json\n{"step": 1, "val_loss": 3.0}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:1: not a JSON line"):
        read_eval_rows(bad, "val_loss")


def test_predict_reads_a_bench_run_record(tmp_path: Path) -> None:
    """The shape ``sfplus bench`` writes to runs/*.json: a curve of pooled and per-source losses."""
    points = [
        {"step": s, "tokens": 64 * s, "pooled": curve(s), "per_source": {"austen": curve(s) + 0.5}}
        for s in (10, 20, 40, 80, 160, 320, 640, 1000)
    ]
    record = {"job": {"id": "6k_sfplus_s0"}, "horizon_steps": 1000, "curve": points, "finals": {}}
    path = tmp_path / "6k_sfplus_s0.json"
    path.write_text(json.dumps(record))
    p = predict_run(path, fraction=0.4)
    assert p.target_step == 1000 and p.fit.num_points == 6 and p.actual == pytest.approx(curve(1000))
    assert abs(p.abs_error) < 1e-4
    per_source = predict_run(path, fraction=0.4, metric="val_loss/austen")
    assert per_source.predicted == pytest.approx(curve(1000) + 0.5, abs=1e-4)
    path.write_text(json.dumps({"job": {}}))
    with pytest.raises(UserError, match="not an sfplus bench run record"):
        predict_run(path)


def test_several_runs_one_bad_the_others_still_print(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_run(tmp_path / "good", synthetic_rows(600, every=20, noise=0.0, seed=3))
    few = write_run(tmp_path / "few", [{"step": s, "val_loss": curve(s)} for s in (0, 50, 100, 150, 200)],
                    {"optim": {"c_warmup": 100}, "steps": 600})
    assert main(["predict", str(tmp_path / "missing"), str(few), str(good)]) == 2
    captured = capsys.readouterr()
    assert f"| {good} |" in captured.out and str(few) not in captured.out
    err = captured.err
    assert "missing" in err and "metrics.jsonl does not exist" in err
    # 2 evaluations after the warm start; the message says where it looked, in increasing steps.
    assert "only 2 evaluations of val_loss from step 101 on, and 2 in steps 101..300" in err
    late = write_run(tmp_path / "late", [{"step": s, "val_loss": curve(s)} for s in (0, 50, 150, 200)],
                     {"optim": {"c_warmup": 100}, "steps": 120})
    with pytest.raises(UserError, match=r"after step 101 \(the first 0.3 of 120 steps ends at step 36\)"):
        predict_run(late, fraction=0.3)


def test_the_prediction_says_how_sure_it_is(tmp_path: Path) -> None:
    noisy = write_run(tmp_path / "noisy", synthetic_rows(600, every=20, noise=0.01, seed=1))
    p = predict_run(noisy, fraction=0.5)
    assert p.stderr is not None and 0 < p.stderr < 0.05 and p.note is None
    assert abs(p.abs_error) < 4 * p.stderr + 0.01
    # A plateau (the loss stopped falling in the fitted part) is flagged: a later descent cannot be foreseen.
    flat = write_run(tmp_path / "flat", [{"step": s, "val_loss": 2.3 + 0.001 * (s % 3)} for s in range(0, 601, 20)])
    q = predict_run(flat, fraction=0.5, from_step=1)
    assert q.note is not None and "stopped falling" in q.note


def test_predict_works_on_a_quickstart_shaped_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``sfplus predict`` once failed on the README's own run (1 evaluation in steps 101..175).

    The README's command (the default recipe) with a 6.6k model and the quickstart's 1.2M tokens (its 586 steps,
    ~12 s): its log-spaced evaluations give the default fit enough points after its first step (twice the
    library's warmup: the default has no warm start), whatever the default warmup is.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path / "quickstart"
        assert main(["train", "--out", str(run), "--model", "6k", "--tokens", "1.2M", "--no-progress",
                     "--cache-dir", str(tmp_path / "cache")]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert main(["predict", str(run), "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    from sfplus import PRESETS
    from sfplus_lab.predict import fit_start

    robust = PRESETS["robust"]
    assert p["target_step"] == 586 and p["fit_from_step"] == fit_start(robust)
    assert p["fit_from_step"] == max(robust["c_warmup"], 2 * robust["warmup_steps"]) + 1
    assert p["fit"]["num_points"] >= 4
    assert p["actual"] is not None and p["stderr"] is not None and abs(p["rel_error"]) < 0.2


def test_the_fit_starts_after_the_warm_start_and_twice_the_warmup() -> None:
    from sfplus_lab.predict import fit_start

    assert fit_start({"c_warmup": 0, "warmup_steps": 50}) == 101  # the default: no warm start, a 50-step warmup
    assert fit_start({"c_warmup": 100, "warmup_steps": 50}) == 101  # the fourth session's default
    assert fit_start({"c_warmup": 300, "warmup_steps": 50}) == 301
    assert fit_start({"c_warmup": 0, "warmup_steps": 200}) == 401  # a 200-step warmup
    assert fit_start({"c_warmup": 0, "warmup_steps": 0}) == 1
    assert fit_start({"c_warmup": None, "warmup_steps": True}) == 1  # unknown or malformed settings count as 0
    assert fit_start(None) == 1 and fit_start({}) == 1
