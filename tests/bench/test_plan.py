"""The sweep planner: grid first, extended until the best LR is bracketed, long runs started from the short best."""

from __future__ import annotations

import math

import pytest

from sfplus_lab.bench.analysis import crossing_tokens
from sfplus_lab.bench.config import BenchConfig
from sfplus_lab.bench.plan import best_k, next_jobs


def _cfg(**kw) -> BenchConfig:
    base = dict(sizes=("3k",), budgets=(20.0, 100.0, 1000.0), lr_grid=(1, 2, 3), max_extensions=2, seeds=2,
                long_sweep="two-sided", long_max_extensions=2)
    base.update(kw)
    return BenchConfig(**base)


def _fake(job, loss_fn) -> dict:
    """A finished record whose pooled loss at each budget is loss_fn(k, budget)."""
    k = job.k if job.k is not None else 0
    return {"job": job.to_dict(), "finals": {f"{b:g}": {"diverged": False, "pooled": loss_fn(k, b), "per_source": {}}
                                             for b in job.budgets}}


def _run_plan(cfg, loss_fn, max_rounds=20):
    records, rounds = {}, 0
    while rounds < max_rounds:
        due, complete = next_jobs(cfg, records)
        if complete:
            return records, rounds
        for job in {j.id: j for j in due}.values():
            records[job.id] = _fake(job, loss_fn)
        rounds += 1
    raise AssertionError("plan did not complete")


def test_first_round_is_the_short_grid_and_sfplus() -> None:
    cfg = _cfg()
    due, complete = next_jobs(cfg, {})
    assert not complete
    by_method: dict[str, list] = {}
    for j in due:
        by_method.setdefault(j.method, []).append(j)
    assert [j.seed for j in by_method["sfplus"]] == [0, 1]
    assert [j.seed for j in by_method["sfplus-gamma1"]] == [0]  # the library's gamma, once
    assert all(j.horizon_tpp == 1250.0 and j.budgets == [20.0, 100.0, 1000.0] for j in by_method["sfplus"])
    # cosine/linear need one run per budget; WSD and SF-AdamW one run per LR serves both short budgets
    assert sorted((j.k, j.budgets[0]) for j in by_method["adamw-cosine"]) == [
        (k, b) for k in (1, 2, 3) for b in (20.0, 100.0)]
    assert sorted(j.k for j in by_method["adamw-wsd"]) == [1, 2, 3]
    assert all(j.budgets == [20.0, 100.0] for j in by_method["adamw-wsd"] + by_method["sf-adamw"])


def test_extra_seeds_give_the_comparison_configuration_more_seeds() -> None:
    due, _ = next_jobs(_cfg(extra_seeds=3), {})
    assert sorted(j.seed for j in due if j.method == "sfplus-gamma1") == [0, 1, 2]
    assert sorted(j.seed for j in due if j.method == "sfplus") == [0, 1]  # the headline keeps ``seeds``


def test_edge_optimum_is_extended_until_bracketed() -> None:
    # best short LR at k = 4.2 (above the grid 1..3); best long LR at k = 2
    def loss(k, b):
        return (k - (4.2 if b < 1000 else 2.0)) ** 2 + math.log(b) * 0.0

    records, _ = _run_plan(_cfg(), loss)
    short_ks = {r["job"]["k"] for r in records.values() if r["job"]["method"] == "adamw-cosine"
                and r["job"]["phase"] == "short"}
    assert short_ks == {1, 2, 3, 4, 5}  # extended twice upwards: 4 is now bracketed by 3 and 5
    long_ks = {r["job"]["k"] for r in records.values() if r["job"]["method"] == "adamw-cosine"
               and r["job"]["phase"] == "long"}
    assert long_ks == {4, 3, 2, 1}  # started at 4 and 3, extended down until 2 was bracketed
    seeds = {(r["job"]["k"], r["job"]["budgets"][0]) for r in records.values()
             if r["job"]["method"] == "adamw-cosine" and r["job"]["seed"] == 1}
    assert seeds == {(4, 20.0), (4, 100.0)}  # cosine is not a long-seed baseline by default
    wsd_long_seed = [r for r in records.values() if r["job"]["method"] == "adamw-wsd" and r["job"]["seed"] == 1
                     and 1000.0 in r["job"]["budgets"]]
    assert [r["job"]["k"] for r in wsd_long_seed] == [2]


def test_extension_stops_at_the_limit() -> None:
    records, _ = _run_plan(_cfg(max_extensions=1), lambda k, b: -k)  # always better higher: never bracketed
    ks = {r["job"]["k"] for r in records.values() if r["job"]["method"] == "sf-adamw" and r["job"]["phase"] == "short"}
    assert ks == {1, 2, 3, 4}


def test_one_sided_long_sweep_does_not_go_up() -> None:
    def loss(k, b):
        return (k - 3.0) ** 2 if b < 1000 else -k  # long budget would prefer ever larger LRs

    records, _ = _run_plan(_cfg(long_sweep="one-sided"), loss)
    long_ks = {r["job"]["k"] for r in records.values() if r["job"]["method"] == "adamw-linear"
               and r["job"]["phase"] == "long"}
    assert long_ks == {3, 2}


def test_best_k_ignores_diverged_runs_and_prefers_the_smaller_lr_on_ties() -> None:
    assert best_k({1: 2.0, 2: 1.5, 3: math.inf}) == 2
    assert best_k({1: 1.0, 2: 1.0}) == 1
    assert best_k({1: math.inf}) is None


def test_crossing_tokens_interpolates_in_log_tokens() -> None:
    curve = [{"tokens": 100, "pooled": 3.0}, {"tokens": 10000, "pooled": 2.0}]
    assert crossing_tokens(curve, 3.5) == 100
    assert math.isclose(crossing_tokens(curve, 2.5), 1000.0)
    assert crossing_tokens(curve, 1.9) is None
    assert crossing_tokens([{"tokens": 10, "pooled": math.nan}, {"tokens": 20, "pooled": 1.0}], 1.5) == 20


def test_time_to_target_takes_one_run_per_seed_the_longest() -> None:
    from sfplus_lab.bench.analysis import _time_to_target

    def run(seed: int, horizon: int, losses: list[float]) -> dict:
        curve = [{"tokens": 100.0 * (i + 1), "pooled": v} for i, v in enumerate(losses)]
        return {"job": {"size": "3k", "method": "sfplus", "seed": seed}, "horizon_steps": horizon, "curve": curve}

    records = {"a_short": run(0, 2, [3.0, 2.5]), "b_long": run(0, 4, [3.0, 2.5, 2.0, 1.5]),
               "c": run(1, 4, [3.0, 3.0, 3.0, 3.0])}
    cells = [{"budget": 1.0, "method": "adamw-wsd", "final_pooled_mean": 2.0}]
    (row,) = _time_to_target(_cfg(), records, "3k", cells, n=300)
    # seed 0 counted once, from the run that goes on to 400 tokens (the 200-token one never gets there)
    assert row["reached_per_seed"] == [True, False]
    assert row["sfplus_fraction_per_seed"][0] == pytest.approx(1.0) and row["sfplus_fraction_per_seed"][1] is None


def test_an_interrupted_extension_is_completed() -> None:
    # the grid is done and the k=4 extension ran at 100 tokens/param only (its 20 run was killed)
    cfg = _cfg()
    records = {}
    due, _ = next_jobs(cfg, records)
    for job in due:
        if job.method == "adamw-cosine":
            records[job.id] = _fake(job, lambda k, b: -k)
    due, _ = next_jobs(cfg, records)
    ext = [j for j in due if j.method == "adamw-cosine"]
    assert {(j.k, j.budgets[0]) for j in ext} == {(4, 20.0), (4, 100.0)}
    job100 = next(j for j in ext if j.budgets == [100.0])
    records[job100.id] = _fake(job100, lambda k, b: -k)
    due, _ = next_jobs(cfg, records)
    assert [(j.k, j.budgets) for j in due if j.method == "adamw-cosine"] == [(4, [20.0])]
