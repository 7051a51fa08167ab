"""How a ScheduleFree+ run's final loss follows its step size late in the run.

Reads the anytime runs that ``benchmarks/sfplus_rerun.py`` cached in ``<dir>/runs/`` (each holds a trace of α
and the final pooled validation loss at each budget) and writes, per configuration: each seed's mean α over
the last third of the steps up to ``--budget`` (the "late α"), its final loss at that budget, and the
correlation of the two over the seeds, plus the correlation over every run read.

    python benchmarks/late_alpha.py benchmarks/results/rerun4_6k benchmarks/results/probes6_6k_1000 \
        --budget 1000 --out benchmarks/results/late_alpha_6k

The runs/ folders are not committed (they are large); rerun the command of each folder
(``command.txt`` or ``benchmarks/run_all.sh``) to recreate them. ``late_alpha.json`` / ``.md`` are the output.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sfplus_rerun import cached_records  # noqa: E402


def late_alpha(record: dict, budget: str, fraction: float = 1 / 3) -> float:
    """Mean α of the trace over the last ``fraction`` of the steps up to the budget's step."""
    end = record["steps"][budget]
    start = end * (1.0 - fraction)
    values = [a for s, a in zip(record["trace"]["step"], record["trace"]["alpha"]) if start < s <= end]
    if not values:
        raise ValueError(f"{record['job']['id']}: no traced step in ({start:.0f}, {end}]")
    return statistics.fmean(values)


def final(record: dict, budget: str) -> float:
    return record["finals"][budget]["pooled"]


def correlation(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3:
        return math.nan
    return statistics.correlation(xs, ys)


def collect(dirs: list[Path], budget: str) -> dict[str, list[dict]]:
    by_config: dict[str, list[dict]] = {}
    seen: set[tuple] = set()  # the same run cached in two folders (same config, seed and finals) counts once
    for folder in dirs:
        for _, record in cached_records(folder):
            job = record["job"]
            if job["kind"] != "anytime" or budget not in record["finals"] or "alpha" not in record.get("trace", {}):
                continue
            key = (job["method"], job["seed"], json.dumps(record["finals"], sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            by_config.setdefault(f"{folder.name}:{job['method']}", []).append(
                {"seed": job["seed"], "late_alpha": late_alpha(record, budget), "final": final(record, budget)}
            )
    return by_config


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="sfplus_rerun.py output folders (with runs/)")
    ap.add_argument("--budget", default="1000", help="tokens per parameter (a budget of the runs)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    by_config = collect(args.dirs, args.budget)
    rows, every_a, every_f = [], [], []
    for name, runs in sorted(by_config.items()):
        runs.sort(key=lambda r: r["seed"])
        a = [r["late_alpha"] for r in runs]
        f = [r["final"] for r in runs]
        every_a += a
        every_f += f
        rows.append({"config": name, "runs": runs, "correlation": correlation(a, f)})
    doc = {"budget": args.budget, "dirs": [str(d) for d in args.dirs], "configs": rows,
           "n_runs": len(every_a), "correlation_all": correlation(every_a, every_f)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "late_alpha.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [f"Late α (mean over the last third of the steps to {args.budget} tokens/param) and final loss there.", "",
             "| folder:config | seeds | late α per seed | final per seed | correlation |", "|---|---|---|---|---|"]
    for row in rows:
        runs = row["runs"]
        alphas = ", ".join(f"{r['late_alpha']:.4f}" for r in runs)
        finals = ", ".join(f"{r['final']:.3f}" for r in runs)
        lines.append(f"| {row['config']} | {len(runs)} | {alphas} | {finals} | {row['correlation']:.2f} |")
    lines += ["", f"All {doc['n_runs']} runs together: correlation {doc['correlation_all']:.2f}."]
    (args.out / "late_alpha.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
