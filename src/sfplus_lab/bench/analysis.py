"""From finished run records to the benchmark's tables and figures: final losses, time-to-target, curves.

* **final loss** per (size, budget, method): the best learning rate by seed 0's pooled validation loss,
  then the mean and spread over every seed run at that LR; per source as well.
* **time-to-target**: for each baseline and budget B, the first point where a ScheduleFree+ run's pooled
  validation loss reaches the baseline's final loss, as a fraction of B's tokens (log-linear
  interpolation between evaluations). The paper's "31% less training" is ``1 - fraction`` against WSD
  at 1000 tokens per parameter.
* **anytime curves** and **schedules** (ScheduleFree+'s emergent alpha beside the tuned LR schedules).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..optim_factory import is_tuned
from .config import BenchConfig
from .plan import best_k, final_loss

__all__ = ["summarize", "crossing_tokens", "format_summary"]


def crossing_tokens(curve: list[dict[str, Any]], target: float) -> float | None:
    """Tokens at which ``curve`` (pooled loss vs tokens) first reaches ``target``; None if it never does.

    Between two evaluations the loss is taken as linear in log(tokens).
    """
    prev = None
    for point in curve:
        loss, tokens = point["pooled"], point["tokens"]
        if math.isfinite(loss) and loss <= target:
            if prev is None or prev[0] == loss:
                return float(tokens)
            (l0, t0), (l1, t1) = prev, (loss, tokens)
            frac = (l0 - target) / (l0 - l1)
            return float(math.exp(math.log(t0) + frac * (math.log(t1) - math.log(t0))))
        if math.isfinite(loss):
            prev = (loss, tokens)
    return None


def _records_of(records: dict[str, dict], size: str, method: str) -> list[dict]:
    """The records of one method, in id order (so a resumed benchmark picks the same runs)."""
    return [records[i] for i in sorted(records)
            if records[i]["job"]["size"] == size and records[i]["job"]["method"] == method]


def _cell(cfg: BenchConfig, recs: list[dict], budget: float, method: str) -> dict[str, Any] | None:
    """Final loss at ``budget`` for one method: best LR by seed 0, then all seeds at that LR."""
    key = f"{budget:g}"
    with_budget = [r for r in recs if key in r["finals"]]
    if not with_budget:
        return None
    sweep: dict[int, float] = {}
    for r in with_budget:
        if r["job"]["seed"] == 0:
            k = r["job"]["k"] if r["job"]["k"] is not None else 0
            sweep[k] = min(sweep.get(k, math.inf), final_loss(r, budget))
    fixed = not is_tuned(method)  # a fixed configuration: nothing swept
    k = best_k(sweep) if not fixed else 0
    chosen = [r for r in with_budget if (r["job"]["k"] if r["job"]["k"] is not None else 0) == k]
    by_seed: dict[int, dict] = {}
    for r in chosen:
        by_seed.setdefault(r["job"]["seed"], r)  # the same (k, seed, budget) from two jobs is the same run
    values = [final_loss(r, budget) for r in by_seed.values()]
    finite = [v for v in values if math.isfinite(v)]
    sources = sorted({s for r in by_seed.values() for s in r["finals"][key]["per_source"]})
    per_source = {
        s: statistics.fmean([r["finals"][key]["per_source"][s] for r in by_seed.values()
                             if s in r["finals"][key]["per_source"]])
        for s in sources
    }
    lr = None if fixed or k is None else cfg.lr(k)
    swept = sorted(sweep)
    # seed 0 picked the learning rate, so its loss is the sweep's minimum: an optimistic draw. The seeds that
    # did not take part in the choice give the estimate without that selection (None: no such seed, or fixed).
    heldout = [v for s, v in zip(by_seed, values) if s != 0 and math.isfinite(v)] if not fixed else []
    return {
        "budget": budget,
        "method": method,
        "best_lr": lr,
        "best_k": None if fixed else k,
        "lr_bracketed": fixed or (k is not None and swept[0] < k < swept[-1]),
        "sweep": {f"{cfg.lr(kk):.4g}": sweep[kk] for kk in swept} if not fixed else {},
        "seeds": sorted(by_seed),
        "final_pooled": values,
        "final_pooled_mean": statistics.fmean(finite) if finite else math.nan,
        "final_pooled_spread": (max(finite) - min(finite)) if len(finite) > 1 else None,
        "final_pooled_std": statistics.stdev(finite) if len(finite) > 1 else None,
        "diverged_seeds": len(values) - len(finite),
        "final_heldout_mean": statistics.fmean(heldout) if heldout else None,
        "heldout_seeds": len(heldout),
        "per_source_mean": per_source,
        "run_ids": [r["job"]["id"] for r in by_seed.values()],
    }


def _time_to_target(
    cfg: BenchConfig, records: dict[str, dict], size: str, cells: list[dict], n: int, method: str = "sfplus"
) -> list[dict]:
    """For each baseline cell, the fraction of its budget's tokens ``method``'s runs need to reach its final loss."""
    longest: dict[int, dict] = {}  # one run per seed: the longest, when a folder holds the same seed twice
    for r in _records_of(records, size, method):  # (e.g. runs reused from a shorter plan, which stop earlier)
        seed = r["job"]["seed"]
        if seed not in longest or r["horizon_steps"] > longest[seed]["horizon_steps"]:
            longest[seed] = r
    sf_runs = [longest[seed] for seed in sorted(longest)]
    out = []
    for cell in cells:
        if not is_tuned(cell["method"]) or not math.isfinite(cell["final_pooled_mean"]):
            continue
        budget_tokens = cell["budget"] * n
        fractions, reached = [], []
        for r in sf_runs:
            t = crossing_tokens(r["curve"], cell["final_pooled_mean"])
            reached.append(t is not None)
            fractions.append(None if t is None else t / budget_tokens)
        got = [f for f in fractions if f is not None]
        horizon = max((r["horizon_steps"] * cfg.tokens_per_step for r in sf_runs), default=0) / budget_tokens
        out.append({
            "budget": cell["budget"],
            "baseline": cell["method"],
            "target_loss": cell["final_pooled_mean"],
            "sfplus_fraction_per_seed": fractions,
            "sfplus_fraction_mean": statistics.fmean(got) if len(got) == len(fractions) and got else None,
            "reached_per_seed": reached,
            "sfplus_horizon_fraction": horizon,
            "sfplus_loss_at_horizon_per_seed": [r["curve"][-1]["pooled"] if r["curve"] else math.nan for r in sf_runs],
        })
    return out


def _anytime(cfg: BenchConfig, records: dict[str, dict], size: str, cells: list[dict]) -> dict[str, Any]:
    """Curves to draw: each baseline's best-LR run at the longest budget, and every ScheduleFree+ seed."""
    out: dict[str, Any] = {}
    long_key = f"{cfg.long_budget:g}"
    for cell in cells:
        if cell["budget"] != cfg.long_budget:
            continue
        for rid in cell["run_ids"]:
            r = records[rid]
            name = f"{cell['method']} (seed {r['job']['seed']})"
            out[name] = {
                "method": cell["method"], "lr": cell["best_lr"], "seed": r["job"]["seed"],
                "curve": [[p["tpp"], p["pooled"]] for p in r["curve"]],
                "trace": r["trace"], "num_params": r["num_params"], "tokens_per_step": cfg.tokens_per_step,
                "final_step": r["steps"].get(long_key),
            }
    return out


def summarize(cfg: BenchConfig, records: dict[str, dict]) -> dict[str, Any]:
    """The per-size results block of ``results.json``."""
    sizes: dict[str, Any] = {}
    for size in cfg.sizes:
        cells = []
        for budget in cfg.budgets:
            for method in ("sfplus", *cfg.sfplus_extra, *cfg.baselines):
                cell = _cell(cfg, _records_of(records, size, method), budget, method)
                if cell is not None:
                    cells.append(cell)
        n = next((r["num_params"] for r in records.values() if r["job"]["size"] == size), None)
        if n is None:
            continue
        sizes[size] = {
            "num_params": n,
            "tokens_per_step": cfg.tokens_per_step,
            "cells": cells,
            "time_to_target": _time_to_target(cfg, records, size, cells, n),
            # the same for each further fixed configuration (e.g. sfplus-gamma1), keyed by its name
            "time_to_target_extra": {m: _time_to_target(cfg, records, size, cells, n, m) for m in cfg.sfplus_extra},
            "anytime": _anytime(cfg, records, size, cells),
        }
    return sizes


def _matrix(block: dict[str, Any]) -> list[str]:
    """Budget x method: mean final pooled loss, with the seed range and the number of seeds."""
    methods = list(dict.fromkeys(c["method"] for c in block["cells"]))
    budgets = list(dict.fromkeys(c["budget"] for c in block["cells"]))
    cells = {(c["budget"], c["method"]): c for c in block["cells"]}
    lines = ["| tokens/param | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for b in budgets:
        row = []
        for m in methods:
            c = cells.get((b, m))
            if c is None:
                row.append("")
                continue
            text = f"{c['final_pooled_mean']:.3f}"
            if c["final_pooled_spread"] is not None:
                text += f" ±{c['final_pooled_spread'] / 2:.3f} (n={len(c['seeds'])})"
            if not c["lr_bracketed"]:
                text += " †"
            row.append(text)
        lines.append(f"| {b:g} | " + " | ".join(row) + " |")
    return lines


def _per_source(block: dict[str, Any], budget: float) -> list[str]:
    cells = [c for c in block["cells"] if c["budget"] == budget]
    sources = sorted({s for c in cells for s in c["per_source_mean"]})
    lines = [f"| method @ {budget:g} tok/param | " + " | ".join(sources) + " |", "|---" * (len(sources) + 1) + "|"]
    for c in cells:
        lines.append(f"| {c['method']} | " + " | ".join(f"{c['per_source_mean'].get(s, math.nan):.3f}"
                                                       for s in sources) + " |")
    return lines


def format_summary(doc: dict[str, Any]) -> str:
    """Markdown tables: final pooled loss per budget and method, and ScheduleFree+'s time-to-target."""
    lines: list[str] = []
    for size, block in doc["sizes"].items():
        lines.append(f"### {size} ({block['num_params']:,} parameters)\n")
        lines.append("Final validation loss (pooled over sources; mean over seeds, ± half the seed range; "
                     "† = best LR on the edge of the sweep):\n")
        lines += _matrix(block)
        lines.append("")
        budgets = sorted({c["budget"] for c in block["cells"]})
        if budgets:
            lines += _per_source(block, budgets[-1])
            lines.append("")
        lines.append("| budget (tok/param) | method | best LR | bracketed | seeds | final val loss (pooled) | spread "
                     "| held-out mean (seeds that did not pick the LR) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for c in block["cells"]:
            fixed = not is_tuned(c["method"])
            lr = "fixed" if fixed else f"{c['best_lr']:.3g}" if c["best_lr"] else "diverged"
            spread = "" if c["final_pooled_spread"] is None else f"{c['final_pooled_spread']:.4f}"
            held = c.get("final_heldout_mean")  # absent from results.json files written before it existed
            held = "" if held is None else f"{held:.4f} (n={c['heldout_seeds']})"
            lines.append(f"| {c['budget']:g} | {c['method']} | {lr} | {'yes' if c['lr_bracketed'] else 'NO'} | "
                         f"{len(c['seeds'])} | {c['final_pooled_mean']:.4f} | {spread} | {held} |")
        lines.append("")
        tables = {"sfplus": block["time_to_target"], **block.get("time_to_target_extra", {})}
        for method, rows in tables.items():
            if not rows or not any(t["sfplus_fraction_per_seed"] for t in rows):
                continue
            lines.append(f"| budget | baseline | target loss | {method} tokens to reach it (fraction of budget), "
                         f"per seed | {method} loss at its last evaluation (fraction) |")
            lines.append("|---|---|---|---|---|")
            for t in rows:
                fr = ", ".join("not reached" if f is None else f"{f:.2f}" for f in t["sfplus_fraction_per_seed"])
                last = ", ".join(f"{v:.3f}" for v in t["sfplus_loss_at_horizon_per_seed"])
                lines.append(f"| {t['budget']:g} | {t['baseline']} | {t['target_loss']:.4f} | {fr} | {last} "
                             f"({t['sfplus_horizon_fraction']:.2f}) |")
            lines.append("")
    return "\n".join(lines)
