"""The training jobs: a WSD cooldown branch IS a WSD run of that length; anytime runs give every budget."""

from __future__ import annotations

import math

import pytest

from sfplus_lab.bench.config import quick_config
from sfplus_lab.bench.runner import Job, eval_steps_for, run_job
from sfplus_lab.optim_factory import OptimConfig


@pytest.fixture(scope="module")
def cfg():
    # budgets long enough (in steps) that warmup (50 steps) ends before the shorter run's cooldown starts
    return quick_config(budgets=(3.0, 6.0), batch_size=4, seq_len=16, eval_tokens=512)


def _wsd(cfg, budgets: list[float]) -> dict:
    job = Job(size="3k", method="adamw-wsd", lr=8e-3, k=3, seed=0, kind="wsd", budgets=budgets,
              horizon_tpp=max(budgets), phase="short")
    return run_job(job, cfg)


def test_wsd_branch_equals_a_direct_run(cfg) -> None:
    branched = _wsd(cfg, [3.0, 6.0])  # stable run for 6, cooldown branch for 3
    direct = _wsd(cfg, [3.0])  # a plain WSD run of the 3 budget
    assert branched["steps"]["3"] == direct["steps"]["3"] > 100
    assert not branched["finals"]["3"]["diverged"]
    # same data, same init, same lr at every step: the same numbers, bit for bit
    assert branched["finals"]["3"]["pooled"] == direct["finals"]["3"]["pooled"]
    assert branched["finals"]["3"]["per_source"] == direct["finals"]["3"]["per_source"]
    assert branched["finals"]["6"]["pooled"] != branched["finals"]["3"]["pooled"]
    assert branched["branches"]["3"][-1]["step"] == branched["steps"]["3"]


def test_sfplus_anytime_run_reports_every_budget_at_x(cfg) -> None:
    job = Job(size="3k", method="sfplus", lr=None, k=None, seed=1, kind="anytime", budgets=[3.0, 6.0],
              horizon_tpp=8.0, phase="sfplus")
    rec = run_job(job, cfg)
    assert rec["optim"] == OptimConfig(name="sfplus").resolved().to_dict()  # the lab's default, untouched
    steps = [p["step"] for p in rec["curve"]]
    assert steps == sorted(steps) and steps[-1] == rec["horizon_steps"]
    for b in ("3", "6"):
        final = rec["finals"][b]
        assert final["step"] in steps and math.isfinite(final["pooled"])
        assert set(final["per_source"]) == {"austen-persuasion", "melville-mobydick"}
    assert len(rec["trace"]["alpha"]) == len(rec["trace"]["step"]) > 0
    assert rec["num_skipped"] == 0


def test_eval_steps_are_log_spaced_and_include_budget_ends(cfg) -> None:
    steps = eval_steps_for(cfg, num_params=3096, horizon_steps=1000, extra=[77, 500, 2000], per_decade=6)
    assert steps == sorted(set(steps)) and steps[-1] == 1000
    assert 77 in steps and 500 in steps and 2000 not in steps
    ratios = [b / a for a, b in zip(steps, steps[1:])]
    assert max(ratios) < 10 ** (1 / 6) * 1.3


def test_schedule_free_runs_do_not_depend_on_their_evaluation_schedule(cfg) -> None:
    # the same SF-AdamW run to two horizons: different evaluation points, identical numbers where they overlap
    runs = [run_job(Job(size="3k", method="sf-adamw", lr=1.6e-2, k=4, seed=0, kind="anytime", budgets=budgets,
                        horizon_tpp=max(budgets), phase=phase), cfg)
            for budgets, phase in (([3.0], "short"), ([3.0, 6.0], "long"))]
    assert len(runs[0]["curve"]) < len(runs[1]["curve"])
    assert runs[0]["finals"]["3"]["pooled"] == runs[1]["finals"]["3"]["pooled"]
