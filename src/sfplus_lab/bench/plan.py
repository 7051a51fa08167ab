"""Which runs to do next, given the runs done so far: the learning-rate sweeps, adaptively bracketed.

For each model size and baseline:

1. **short**: sweep the grid ``cfg.lr_grid`` at the short budgets (all but the longest). If the best LR
   at any short budget lies on the edge of what was swept, add the next grid point on that side (up to
   ``max_extensions``), until every short budget's best LR is bracketed.
2. **long**: at the longest budget start from the best short-budget LR (at the largest short budget) and
   half of it (the best LR usually falls as the horizon grows), then extend until the best is bracketed
   (``long_sweep``: both sides, or downwards only), by at most ``long_max_extensions`` points.
3. **seed**: the best LR of each short budget, and of the long budget for ``long_seed_baselines``, is rerun
   with seeds 1 .. seeds-1, so the reported cells have a spread.

ScheduleFree+ needs no planning: ``seeds`` runs of its fixed default configuration, each to
``sfplus_horizon`` times the longest budget, serve every budget.

The planner is a pure function of the finished records, so an interrupted benchmark resumes by rerunning
the same command (finished runs are read back from their files).
"""

from __future__ import annotations

import math
from typing import Any

from ..optim_factory import METHODS
from .config import BenchConfig
from .runner import Job

__all__ = ["next_jobs", "final_loss", "best_k"]


def _kind(method: str) -> str:
    """How runs of ``method`` serve the budgets (``Method.kind``): anytime, wsd or decay."""
    return METHODS[method].kind


def final_loss(record: dict[str, Any], budget: float) -> float:
    """Pooled validation loss of a record at ``budget`` (inf if it diverged or lacks that budget)."""
    final = record["finals"].get(f"{budget:g}")
    if final is None or final["diverged"] or not math.isfinite(final["pooled"]):
        return math.inf
    return float(final["pooled"])


def _jobs_at(
    cfg: BenchConfig, size: str, method: str, k: int, budgets: list[float], seed: int, phase: str
) -> list[Job]:
    """The job(s) that measure ``method`` at LR index ``k`` for ``budgets``."""
    lr = cfg.lr(k)
    kind = _kind(method)
    if kind == "decay":
        return [Job(size=size, method=method, lr=lr, k=k, seed=seed, kind=kind, budgets=[b], horizon_tpp=b,
                    phase=phase) for b in budgets]
    return [Job(size=size, method=method, lr=lr, k=k, seed=seed, kind=kind, budgets=list(budgets),
                horizon_tpp=max(budgets), phase=phase)]


def _scores(records: dict[str, dict], size: str, method: str, budget: float, seed: int = 0,
            phase: str | None = None) -> dict[int, float]:
    """LR index -> pooled loss at ``budget`` over finished records of (size, method, seed[, phase])."""
    out: dict[int, float] = {}
    for rec in records.values():
        job = rec["job"]
        if phase is not None and job["phase"] != phase:
            continue
        if job["size"] == size and job["method"] == method and job["seed"] == seed and f"{budget:g}" in rec["finals"]:
            out[job["k"]] = min(out.get(job["k"], math.inf), final_loss(rec, budget))
    return out


def best_k(scores: dict[int, float]) -> int | None:
    """The LR index with the lowest loss (ties: the smaller LR); None when every run diverged or none ran."""
    finite = {k: v for k, v in scores.items() if math.isfinite(v)}
    if not finite:
        return None
    return min(finite, key=lambda k: (finite[k], k))


def _extension(scores: dict[int, float], base: list[int], max_ext: int, downward_only: bool = False) -> int | None:
    """The grid point to add so the best is bracketed, or None if it is (or the extension limit is hit)."""
    if not scores:
        return None
    k = best_k(scores)
    lo, hi = min(scores), max(scores)
    if k is None:  # everything diverged: go down
        return lo - 1 if lo > min(base) - max_ext else None
    if k == lo and lo > min(base) - max_ext:
        return lo - 1
    if k == hi and not downward_only and hi < max(base) + max_ext:
        return hi + 1
    return None


def _baseline_jobs(cfg: BenchConfig, records: dict[str, dict], size: str, method: str) -> tuple[list[Job], bool]:
    """Jobs of one baseline that are due now, and whether this baseline's plan is complete."""
    short, long_b = list(cfg.short_budgets), cfg.long_budget
    grid = list(cfg.lr_grid)
    # 1. short sweep over the grid, extended until each short budget's best is bracketed. Every LR the
    # sweep has touched (grid or extension) is completed at every short budget first, so an interrupted
    # extension is finished rather than forgotten.
    swept = set(grid) | {r["job"]["k"] for r in records.values() if r["job"]["phase"] == "short"
                         and r["job"]["size"] == size and r["job"]["method"] == method}
    wanted = [j for k in sorted(swept) for j in _jobs_at(cfg, size, method, k, short, 0, "short")]
    missing = [j for j in wanted if j.id not in records]
    if missing:
        return missing, False
    # Decisions about the sweep use the short sweep's own runs only: a long WSD / SF-AdamW run also
    # reports the short budgets, and letting it move the short optimum would restart the long sweep.
    for b in short:
        ext = _extension(_scores(records, size, method, b, phase="short"), grid, cfg.max_extensions)
        if ext is not None and ext not in swept:
            return _jobs_at(cfg, size, method, ext, short, 0, "short"), False
    due: list[Job] = []
    # 3a. extra seeds at each short budget's best LR (over every seed-0 run, as the results table picks it)
    for seed in range(1, cfg.seeds):
        for b in short:
            k = best_k(_scores(records, size, method, b))
            if k is not None:
                budgets = [b] if _kind(method) == "decay" else short
                due += [j for j in _jobs_at(cfg, size, method, k, budgets, seed, "seed") if j.id not in records]
    if len(cfg.budgets) == 1:
        return due, not due
    # 2. long budget: start at the short best and half of it, extend until bracketed
    k_short = best_k(_scores(records, size, method, short[-1], phase="short"))
    k_short = min(grid) if k_short is None else k_short
    start = [k_short, k_short - 1]
    long_jobs = [j for k in start for j in _jobs_at(cfg, size, method, k, [*short, long_b] if _kind(method) != "decay"
                                                    else [long_b], 0, "long")]
    missing = [j for j in long_jobs if j.id not in records]
    if missing:
        return due + missing, False
    long_scores = _scores(records, size, method, long_b)
    ext = _extension(long_scores, start, cfg.long_max_extensions, downward_only=cfg.long_sweep == "one-sided")
    if ext is not None and ext not in long_scores:
        extra = _jobs_at(cfg, size, method, ext, [*short, long_b] if _kind(method) != "decay" else [long_b], 0, "long")
        return due + [j for j in extra if j.id not in records], False
    # 3b. extra seeds at the long budget's best LR (the headline cells)
    if method in cfg.long_seed_baselines:
        k = best_k(long_scores)
        if k is not None:
            for seed in range(1, cfg.seeds):
                budgets = [*short, long_b] if _kind(method) != "decay" else [long_b]
                due += [j for j in _jobs_at(cfg, size, method, k, budgets, seed, "seed") if j.id not in records]
    return due, not due


def sfplus_jobs(cfg: BenchConfig, size: str) -> list[Job]:
    """ScheduleFree+'s runs, past the longest budget: the default config ``seeds`` times, extras ``extra_seeds``."""
    runs = [("sfplus", seed) for seed in range(cfg.seeds)]
    runs += [(name, seed) for name in cfg.sfplus_extra for seed in range(cfg.extra_seeds)]
    return [Job(size=size, method=name, lr=None, k=None, seed=seed, kind="anytime", budgets=list(cfg.budgets),
                horizon_tpp=cfg.sfplus_horizon * cfg.long_budget, phase="sfplus") for name, seed in runs]


def next_jobs(cfg: BenchConfig, records: dict[str, dict]) -> tuple[list[Job], bool]:
    """All jobs due given the finished ``records`` (by job id), and whether the whole plan is complete.

    A due job may already be running; the caller skips ids it has submitted.
    """
    due: list[Job] = []
    complete = True
    for size in cfg.sizes:
        due += [j for j in sfplus_jobs(cfg, size) if j.id not in records]
        for method in cfg.baselines:
            jobs, done = _baseline_jobs(cfg, records, size, method)
            due += jobs
            complete = complete and done
    complete = complete and not due
    return due, complete
