"""Rerun ScheduleFree+ configurations against the tuned baselines of a finished ``sfplus bench`` results file.

The baselines' learning-rate sweeps cost most of a benchmark; their final losses are in the committed
``results.json`` (the ``cells``), measured with the same corpus, model, batches, seeds and evaluation.
This script trains only the named ScheduleFree+ configurations (``SFPLUS_CONFIGS``; "sfplus" is the
library's default) with that file's settings, one anytime run per seed to the file's horizon, and writes
``<out>/rerun.json`` and a markdown table: final pooled loss per budget (mean ± half the seed range, n)
next to every method of the file, and time-to-target against each baseline's final loss. (The files'
"sfplus" rows are the lab's setting when the file was made, shown under the name of the registry entry with
that configuration: for 0.1.0's files "sfplus-lab-v1", the paper's update at gamma 0.3.)

    python benchmarks/sfplus_rerun.py benchmarks/results/quality_cpu_debian/results.json \\
        --configs sfplus --seeds 4 --out benchmarks/results/rerun_6k

Runs are cached in ``<out>/runs/`` and reused, so an interrupted rerun resumes.

Probes: ``--variant NAME=JSON`` trains a configuration that is not in the registry (JSON: ``OptimConfig``
fields over the library's default, ``"off"`` for a safeguard off), and ``--max-budget B`` stops every run at
the file's horizon for the budgets up to B (a cheap look at the short budgets):

    python benchmarks/sfplus_rerun.py benchmarks/results/quality_cpu_debian/results.json --max-budget 100 \\
        --variant 'alpha-0.064={"lr": 10000, "max_step": 0.064}' --configs sfplus alpha-0.064 --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path

from sfplus_lab.atomic import write_atomic
from sfplus_lab.bench.analysis import crossing_tokens
from sfplus_lab.bench.config import SFPLUS_CONFIGS, BenchConfig
from sfplus_lab.bench.meta import run_meta
from sfplus_lab.bench.runner import Job, run_job
from sfplus_lab.errors import UserError
from sfplus_lab.optim_factory import METHODS, add_variant


def bench_config(doc: dict) -> BenchConfig:
    names = {f.name for f in fields(BenchConfig)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in doc["config"].items() if k in names}
    kw["workers"] = 1
    return BenchConfig(**kw)


def anytime_job(size: str, config: str, seed: int, budgets: list[float], cfg: BenchConfig) -> Job:
    """One anytime run of a ScheduleFree+ configuration, to the file's horizon for these budgets."""
    return Job(size=size, method=config, lr=None, k=None, seed=seed, kind="anytime", budgets=budgets,
               horizon_tpp=max(budgets) * cfg.sfplus_horizon, phase="sfplus")  # fmt: skip


def register_variants(parser: argparse.ArgumentParser, specs: list[str]) -> set[str]:
    """Register each ``--variant NAME=JSON`` probe for this process; the configuration names now known."""
    for spec in specs:
        name, sep, text = spec.partition("=")
        try:
            if not sep:
                raise UserError("expected NAME=JSON")
            add_variant(name, json.loads(text))
        except (json.JSONDecodeError, UserError, TypeError) as exc:
            parser.error(f"--variant {spec!r}: {exc}")
    return set(SFPLUS_CONFIGS) | {spec.partition("=")[0] for spec in specs}


def file_sizes(parser: argparse.ArgumentParser, doc: dict, path: Path | str, sizes: list[str] | None) -> list[str]:
    """The sizes asked for (all of the file's when none), each checked to be in the results file at ``path``."""
    for size in sizes or ():
        if size not in doc["sizes"]:
            parser.error(f"size {size!r} is not in {path} (it has {', '.join(doc['sizes'])})")
    return list(sizes or doc["sizes"])


def cached_records(folder: Path) -> list[tuple[Path, dict]]:
    """Every run cached in ``folder/runs/``, read, in file-name order; none is an error that names the folder (the
    runs/ folders are not committed: each folder's ``command.txt`` makes them again)."""
    paths = sorted((folder / "runs").glob("*.json"))
    if not paths:
        raise SystemExit(f"{folder}/runs has no run files: rerun that folder's command first")
    return [(path, json.loads(path.read_text())) for path in paths]


def _run(args: tuple) -> dict:
    job, cfg, path = args
    if path.exists():
        return json.loads(path.read_text())
    record = run_job(job, cfg)
    write_atomic(path, json.dumps(record))
    return record


def file_sfplus_label(doc: dict) -> str:
    """The name of the registry entry whose resolved configuration the file's own "sfplus" rows used: the files
    written by version 0.1.0 hold its lab setting ("sfplus-lab-v1"), later ones the library's default of the
    day, which may since have become a named entry (the fourth session's: "sfplus-cw100-b0.8")."""
    recorded = doc.get("sfplus_config") or {}
    norm = lambda d: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}  # noqa: E731
    for name, method in METHODS.items():
        if not name.startswith("sfplus"):
            continue
        want = norm(method.optim_config().resolved().to_dict())
        if all(recorded.get(k) == v for k, v in want.items() if k in recorded):
            return name
    return "sfplus-of-the-file"


def _fmt(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"diverged (n={len(values)})"
    mean = statistics.fmean(finite)
    half = (max(finite) - min(finite)) / 2
    div = len(values) - len(finite)
    return f"{mean:.3f} ±{half:.3f} (n={len(values)}{f', {div} diverged' if div else ''})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a results.json written by sfplus bench")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["sfplus"],
        help=f"registry configurations ({', '.join(SFPLUS_CONFIGS)}) or --variant names",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a probe: OptimConfig fields over the library's default, e.g. 'no-anneal={\"sf_beta1_anneal_steps\": 0}'",
    )
    parser.add_argument("--max-budget", type=float, help="only the file's budgets up to this many tokens/param")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--sizes", nargs="+", help="sizes of the file to rerun (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    known = register_variants(parser, args.variant)
    for name in args.configs:
        if name not in known:
            parser.error(f"unknown configuration {name!r}; choose from {', '.join(sorted(known))}")
    doc = json.loads(Path(args.results).read_text())
    cfg = bench_config(doc)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    budgets = sorted(float(b) for b in cfg.budgets if args.max_budget is None or b <= args.max_budget)
    if not budgets:
        parser.error(f"--max-budget {args.max_budget:g} is below every budget of the file ({cfg.budgets})")
    sizes = file_sizes(parser, doc, args.results, args.sizes)
    jobs = []
    for size in sizes:
        for config in args.configs:
            for seed in range(args.seeds):
                job = anytime_job(size, config, seed, budgets, cfg)
                jobs.append((job, cfg, out / "runs" / f"{job.id}.json"))
    meta = run_meta("cpu")  # the commit and versions this invocation trains with (cached runs keep theirs)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        records = list(pool.map(_run, jobs))
    report: dict = {"source": args.results, "configs": args.configs, "seeds": args.seeds, "meta": meta, "sizes": {},
                    "overrides": {name: dict(METHODS[name].config) for name in args.configs}}  # fmt: skip
    lines = []
    for size in sizes:
        block = doc["sizes"][size]
        cells = block["cells"]
        methods = list(dict.fromkeys(c["method"] for c in cells))
        lines.append(f"### {size} ({block['num_params']:,} parameters)\n")
        # The file's "sfplus" rows are whatever the lab's setting was when it was made (0.1.0: the paper's update
        # at gamma 0.3): named by the registry entry with that configuration.
        old = {"sfplus": file_sfplus_label(doc)}
        head = ["tokens/param"] + [f"{c} (rerun)" for c in args.configs] + [f"{old.get(m, m)} (file)" for m in methods]
        lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        size_report: dict = {"finals": {}, "time_to_target": {}}
        by_config = {c: [r for (j, _, _), r in zip(jobs, records) if j.size == size and j.method == c]
                     for c in args.configs}  # fmt: skip
        for b in budgets:
            row = [f"{b:g}"]
            for config in args.configs:
                recs = by_config[config]
                finals = [r["finals"][f"{b:g}"]["pooled"] for r in recs]
                size_report["finals"][f"{config}@{b:g}"] = finals
                row.append(_fmt(finals))
            for m in methods:
                cell = next((c for c in cells if c["method"] == m and c["budget"] == b), None)
                row.append(_fmt(cell["final_pooled"]) if cell else "-")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        tokens_per_budget = {b: b * block["num_params"] for b in budgets}
        lines += ["| budget | target (file) | " + " | ".join(f"{c} seeds: fraction of budget" for c in args.configs)
                  + " |", "|---|---|" + "---|" * len(args.configs)]  # fmt: skip
        for t in block["time_to_target"]:
            b, target = t["budget"], t["target_loss"]
            if b not in budgets:
                continue
            row = [f"{b:g}", f"{t['baseline']} {target:.3f}"]
            for config in args.configs:
                recs = by_config[config]
                fr = []
                for r in recs:
                    tok = crossing_tokens(r["curve"], target)
                    fr.append(None if tok is None else tok / tokens_per_budget[b])
                size_report["time_to_target"][f"{config}@{b:g}@{t['baseline']}"] = fr
                row.append(", ".join("not reached" if f is None else f"{f:.2f}" for f in fr))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        report["sizes"][size] = size_report
    text = "\n".join(lines)
    (out / "rerun.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "rerun.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
