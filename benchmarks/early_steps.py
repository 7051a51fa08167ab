"""The first steps of ScheduleFree+ configurations on a benchmark's model, every step traced, over many seeds.

A run of the benchmark keeps a decimated trace; this script trains only the first ``--steps`` steps, on exactly
the benchmark's batches and initialisation (so its evaluations equal the benchmark's at the same step), and keeps
every step's statistics: α, the loss F, the inner term I, the L1 norm of the gradient and its running estimate ê.
It answers where the seeds part early (the escape from the unigram plateau) and how a configuration changes
that, at a few minutes a configuration where the full run takes an hour:

    python benchmarks/early_steps.py benchmarks/results/quality_cpu_debian_20k_1000/results.json --size 20k \\
        --seeds 16 --steps 981 --evals 100 196 400 981 \\
        --variant 'pb999={"polyak_beta": 0.999}' --configs sfplus pb999 --out benchmarks/results/early_20k

For each configuration and evaluation step: the mean validation loss at x over the seeds, its standard deviation,
half-range and worst seed; per seed the step at which α peaked and the peak. ``early_steps.json`` has every
step's statistics for the first ``--keep`` steps of every run; ``early_steps.md`` is the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sfplus_rerun import bench_config, register_variants  # noqa: E402

from sfplus_lab import loop  # noqa: E402
from sfplus_lab.atomic import write_atomic  # noqa: E402
from sfplus_lab.bench.config import model_config  # noqa: E402
from sfplus_lab.bench.meta import run_meta  # noqa: E402
from sfplus_lab.bench.runner import _eval_windows, _nonfinite, evaluate, load_bench_corpus  # noqa: E402
from sfplus_lab.data import get_batch  # noqa: E402
from sfplus_lab.errors import UserError  # noqa: E402
from sfplus_lab.model import GPT  # noqa: E402
from sfplus_lab.optim_factory import METHODS, build_optimizer  # noqa: E402

#: The optimizer statistics kept for every step (``optimizer.stats`` keys), with the training loss.
STATS = ("alpha", "loss", "inner", "l1", "e_hat")


def trace_run(config: str, seed: int, *, cfg, size: str, steps: int, evals: list[int]) -> dict:
    """One run's first ``steps`` steps: every step's statistics and the validation loss at x at ``evals``."""
    torch.manual_seed(seed)
    corpus = load_bench_corpus(cfg.data, cfg.tokenizer)
    windows = _eval_windows(cfg.data, cfg.tokenizer, cfg.seq_len, cfg.batch_size, cfg.eval_tokens)
    model = GPT(model_config(size, corpus.vocab_size, cfg.seq_len))
    # total_steps only sizes a baseline's schedule; ScheduleFree+ has none
    opt, sched = build_optimizer(METHODS[config].optim_config(lr=None), model, steps)
    rows: dict[str, list[float]] = {key: [] for key in STATS}
    at: dict[str, float] = {}
    device = torch.device("cpu")
    for step in range(steps):
        x, y = get_batch(corpus.train, batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=seed, step=step)
        _, stepped = loop.train_step(model, model, opt, sched, x, y, skip=_nonfinite)
        if not stepped:
            break
        stats = opt.stats
        for key in STATS:
            rows[key].append(float(stats[key]))
        if step + 1 in evals:
            at[str(step + 1)] = evaluate(model, opt, windows, device)["pooled"]
    alphas = rows["alpha"]
    peak = max(range(len(alphas)), key=alphas.__getitem__) if alphas else -1
    return {"config": config, "seed": seed, "evals": at, "steps": len(alphas),
            "alpha_peak": alphas[peak] if alphas else math.nan, "alpha_peak_step": peak + 1, "rows": rows}  # fmt: skip


def summarise(runs: list[dict], configs: list[str], evals: list[int]) -> list[dict]:
    """Per configuration and evaluation step: mean, standard deviation, half-range and worst seed."""
    out = []
    for config in configs:
        for step in evals:
            values = [r["evals"][str(step)] for r in runs if r["config"] == config and str(step) in r["evals"]]
            if not values:
                continue
            out.append({
                "config": config, "step": step, "n": len(values), "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "half_range": (max(values) - min(values)) / 2, "worst": max(values),
            })  # fmt: skip
    return out


def table(summary: list[dict], runs: list[dict], configs: list[str]) -> str:
    lines = ["| configuration | step | mean | sd | half-range | worst seed | n |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {s['config']} | {s['step']} | {s['mean']:.4f} | {s['sd']:.4f} | {s['half_range']:.4f} | "
              f"{s['worst']:.4f} | {s['n']} |" for s in summary]  # fmt: skip
    lines += ["", "Per seed: the validation loss at x at each evaluation step; the peak of α (at its step).", ""]
    for config in configs:
        lines.append(f"**{config}**")
        lines.append("")
        for r in (r for r in runs if r["config"] == config):
            evs = ", ".join(f"{s}: {v:.4f}" for s, v in r["evals"].items())
            lines.append(f"- seed {r['seed']}: {evs}; α peak {r['alpha_peak']:.4f} (step {r['alpha_peak_step']})")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a results.json written by sfplus bench (its data, batch and evaluation)")
    parser.add_argument("--size", required=True, help="one of the file's model sizes")
    parser.add_argument("--configs", nargs="+", default=["sfplus"], help="ScheduleFree+ configurations")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="a probe: OptimConfig fields over the library's default")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--evals", type=int, nargs="+", required=True, help="steps at which to evaluate at x")
    parser.add_argument("--keep", type=int, default=400, help="steps of per-step statistics kept per run")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        doc = json.loads(Path(args.results).read_text())
        cfg = bench_config(doc)
        register_variants(parser, args.variant)
        if args.size not in cfg.sizes:
            raise UserError(f"--size {args.size!r} is not one of the file's sizes {list(cfg.sizes)}")
        for config in args.configs:
            if config not in METHODS or METHODS[config].optim_config(lr=None).name != "sfplus":
                raise UserError(f"--configs {config!r} is not a ScheduleFree+ configuration")
        evals = sorted(set(args.evals))
        if args.steps < 1 or evals[0] < 1 or evals[-1] > args.steps:
            raise UserError(f"--evals must lie in 1..--steps ({args.steps}), got {evals}")
    except (UserError, OSError, KeyError, json.JSONDecodeError) as err:
        print(f"early_steps: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(cfg.threads)
    runs = []
    for config in args.configs:
        for seed in range(args.seeds):
            run = trace_run(config, seed, cfg=cfg, size=args.size, steps=args.steps, evals=evals)
            print(f"{config} seed {seed}: " + ", ".join(f"{s}: {v:.4f}" for s, v in run["evals"].items()), flush=True)
            run["rows"] = {k: [float(f"{v:.6g}") for v in vals[: args.keep]] for k, vals in run["rows"].items()}
            runs.append(run)
    summary = summarise(runs, args.configs, evals)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"source": args.results, "size": args.size, "steps": args.steps, "evals": evals,
              "variants": args.variant, "meta": run_meta(), "summary": summary, "runs": runs}  # fmt: skip
    write_atomic(out / "early_steps.json", json.dumps(result))
    text = table(summary, runs, args.configs)
    write_atomic(out / "early_steps.md", text + "\n")
    print(text.split("\n\n")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
