"""Run the robustness suite: problems x configurations x seeds; a run diverged when its final loss at x
is above its initial loss or not finite."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import sfplus

from ..optim_factory import FORMER_BETAS, FORMER_RATIO1, FORMER_WARMUP, param_groups
from .problems import PROBLEMS, LabGPT

#: The default of the twelfth and thirteenth sessions (a lead in the eleventh): inner momentum 0.5, a 200-step warmup.
_DEFAULT_W200: dict[str, Any] = {**FORMER_BETAS, "warmup_steps": 200}

#: name -> constructor keyword arguments of ScheduleFreePlus (applied on top of the library's defaults).
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": dict(sfplus.PAPER),
    # the default's settings with every safeguard off (the bench's "sfplus-gamma1" row)
    "paper-llm": dict(sfplus.PAPER, warmup_steps=50, weight_decay=10.0, sf_beta1_anneal_steps=1000,
                      polyak_beta=0.9, c_warmup=100, r=1.0),  # fmt: skip
    "default-no-max-inner": {"max_inner": None},
    "default-no-growth": {"max_step_growth": None},
    "default-no-bounded-decay": {"bounded_decay": False},
    "default-no-ratio": {**FORMER_WARMUP, "max_step_ratio": None},  # the eleventh session's default
    "default-max-inner1": {"max_inner": 1.0},  # the next candidate: kappa = 1 (cheaper on the language models)
    # the default until the fourth session
    "default-anneal1000": {**FORMER_RATIO1, "sf_beta1_anneal_steps": 1000, "betas": (0.9, 0.95), "c_warmup": 100},
    # between the fourth session's two changes
    "default-beta1-0.9": {**FORMER_RATIO1, "betas": (0.9, 0.95), "c_warmup": 100},
    "default-cw100-b0.8": {**FORMER_RATIO1, "c_warmup": 100, "betas": (0.8, 0.95)},  # the fourth session's default
    "default-warmup25": {**FORMER_RATIO1, "warmup_steps": 25},  # a lead at 20 tokens/param (seventh session)
    "default-warmup200": {**_DEFAULT_W200},
    # a longer memory of the L1 norm, and a slower growth bound (thirteenth session)
    "default-pb999": {**_DEFAULT_W200, "polyak_beta": 0.999},
    "default-growth0.02": {**_DEFAULT_W200, "max_step_growth": 0.02},
    "default-b0.3": {"betas": (0.3, 0.95)},  # the default from the fourteenth session (a candidate there)
    # a 100-step memory of the L1 norm: a lead of the sixteenth session
    "default-pb0.99": {"betas": (0.3, 0.95), "polyak_beta": 0.99},
    # a lead at 96k and at 20 tokens/param (ninth session)
    "default-ratio0.25": {**FORMER_WARMUP, "max_step_ratio": 0.25},
    # between it and R = 1; the default in the tenth session
    "default-ratio0.5": {**FORMER_WARMUP, "max_step_ratio": 0.5},
    "default-ratio1": {**FORMER_WARMUP, "max_step_ratio": 1.0},  # the default from the third to the ninth session
    # the paper's reference defaults (no warmup, no decay, no annealing, ...) plus only the four safeguards
    "paper+safeguards": dict(sfplus.PAPER, max_inner=0.0, max_step_growth=0.05, max_step_ratio=1.0,
                             bounded_decay=True),  # fmt: skip
    "paper+safeguards+wd10": dict(sfplus.PAPER, max_inner=0.0, max_step_growth=0.05, max_step_ratio=1.0,
                                  bounded_decay=True, weight_decay=10.0),  # fmt: skip
    "paper+safeguards+warmup": dict(sfplus.PAPER, max_inner=0.0, max_step_growth=0.05, max_step_ratio=1.0,
                                    bounded_decay=True, warmup_steps=50),  # fmt: skip
    "paper+safeguards+warmup+wd10": dict(sfplus.PAPER, max_inner=0.0, max_step_growth=0.05, max_step_ratio=1.0,
                                         bounded_decay=True, warmup_steps=50, weight_decay=10.0),  # fmt: skip
    "paper+safeguards+warmup+pb": dict(sfplus.PAPER, max_inner=0.0, max_step_growth=0.05, max_step_ratio=1.0,
                                       bounded_decay=True, warmup_steps=50, polyak_beta=0.9, r=1.0),  # fmt: skip
}
#: AdamW (cosine decay to 0) learning rates swept on seed 0; the best is run on every seed.
ADAMW_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def _groups(problem: Any, weight_decay: float | None, preset: str) -> Any:
    """The lab's grouping (no decay on gains and biases) for the lab's GPT; model.parameters() otherwise,
    as a user changing one line would write it."""
    if isinstance(problem, LabGPT):
        wd = sfplus.PRESETS[preset]["weight_decay"] if weight_decay is None else weight_decay
        return param_groups(problem.model, wd)
    return problem.model.parameters()


def run_one(name: str, seed: int, method: str, kwargs: dict[str, Any], lr: float | None = None) -> dict[str, Any]:
    """Train one problem once; returns the initial and final loss at x and the largest step."""
    torch.manual_seed(seed)
    problem = PROBLEMS[name](seed)
    with torch.no_grad():
        initial = problem.eval_loss()
    if method == "adamw":
        opt = torch.optim.AdamW(problem.model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=problem.steps)
    else:
        wd = kwargs.get("weight_decay")
        opt = sfplus.ScheduleFreePlus(_groups(problem, wd, kwargs.get("preset", "robust")), **kwargs)
        sched = None
    alpha_max, error = 0.0, None
    for k in range(problem.steps):
        opt.zero_grad(set_to_none=True)
        loss = problem.batch_loss(k)
        loss.backward()
        try:
            if sched is None:
                opt.step(loss=loss)
                alpha_max = max(alpha_max, opt.stats.get("alpha", 0.0))
            else:
                opt.step()
                sched.step()
        except RuntimeError as exc:  # e.g. alpha^2 * lambda overflowing a float: a divergence
            error = f"step {k + 1}: {exc}"
            break
        if not math.isfinite(loss.item()) or loss.item() > 1e8:
            break
    if sched is None:
        opt.eval()
    with torch.no_grad():
        final = math.inf if error else problem.eval_loss()
    diverged = not math.isfinite(final) or final > initial
    return {"problem": name, "seed": seed, "method": method, "initial": initial, "final": final,
            "diverged": diverged, "alpha_max": alpha_max, "lr": lr, "error": error}  # fmt: skip


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    finals = [r["final"] for r in runs]
    finite = [f for f in finals if math.isfinite(f)]
    return {
        "seeds": len(runs),
        "diverged": sum(r["diverged"] for r in runs),
        "median": statistics.median(finite) if finite else math.nan,
        "min": min(finite) if finite else math.nan,
        "max": max(finite) if finite else math.nan,
        "initial": statistics.median(r["initial"] for r in runs),
    }


def run_suite(problems: list[str], configs: list[str], seeds: int, adamw: bool, log: Any = print) -> dict[str, Any]:
    torch.set_num_threads(1)
    results: dict[str, Any] = {"problems": problems, "configs": configs, "seeds": seeds, "runs": [], "table": {}}
    for name in problems:
        start = time.perf_counter()
        row = {}
        for config in configs:
            runs = [run_one(name, s, config, CONFIGS[config]) for s in range(seeds)]
            results["runs"] += runs
            row[config] = _summarise(runs)
        if adamw:
            sweep = {lr: run_one(name, 0, "adamw", {}, lr)["final"] for lr in ADAMW_LRS}
            best = min(sweep, key=lambda lr: sweep[lr] if math.isfinite(sweep[lr]) else math.inf)
            runs = [run_one(name, s, "adamw", {}, best) for s in range(seeds)]
            results["runs"] += runs
            row["adamw-tuned"] = {**_summarise(runs), "best_lr": best, "sweep": sweep}
        results["table"][name] = row
        log(f"{name}: " + "  ".join(f"{c} {v['diverged']}/{v['seeds']} {v['median']:.4g}" for c, v in row.items())
            + f"  ({time.perf_counter() - start:.0f} s)")  # fmt: skip
    return results


def markdown(results: dict[str, Any]) -> str:
    """One table: per problem and configuration, diverged seeds / seeds, median final loss at x [min, max]."""
    cols = list(next(iter(results["table"].values())).keys())
    lines = ["| problem (initial loss) | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in results["table"].items():
        cells = []
        for c in cols:
            v = row[c]
            cell = f"{v['diverged']}/{v['seeds']} div, {v['median']:.4g} [{v['min']:.4g}, {v['max']:.4g}]"
            if "best_lr" in v:
                cell += f" (lr {v['best_lr']:g})"
            cells.append(cell)
        initial = next(iter(row.values()))["initial"]
        lines.append(f"| {name} ({initial:.4g}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfplus_lab.robust", description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (results.json, summary.md)")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per problem and configuration (default 5)")
    parser.add_argument("--no-adamw", action="store_true", help="skip the tuned AdamW column")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_suite(args.problems, args.configs, args.seeds, not args.no_adamw)
    results["meta"] = {"torch": torch.__version__, "sfplus": sfplus.__version__,
                       "defaults": {k: v for k, v in sfplus.PRESETS["robust"].items()}}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "summary.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {out / 'results.json'} and {out / 'summary.md'}")
    return 0
