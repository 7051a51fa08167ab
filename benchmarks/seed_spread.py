"""How the seeds of one configuration spread out and come together over a run.

Reads cached benchmark runs (``<dir>/runs/*.json``, written by ``sfplus bench``, ``sfplus_rerun.py`` or
``baseline_seeds.py``), groups them by model size, method and learning rate, and at each of the given points
of training (tokens per parameter) reports over the group's seeds: the mean validation loss at x, the range
(max − min), the range without the lowest seed, and the standard deviation; then each seed's offset from the
group's median at each point. A run's loss between two of its evaluations is interpolated linearly in
log(tokens), so runs evaluated at different steps can be compared.

    python benchmarks/seed_spread.py benchmarks/results/seeds_headline_20k benchmarks/results/seeds_headline \
        --size 20k --at 30 65 100 200 330 580 1000 --out benchmarks/results/seed_spread_20k

It answers whether the seeds of a method scatter early and then converge (the spread shrinks late) or keep
their distance, and whether a seed's offset from the median fades (it was ahead or behind in time) or stays
(it ends somewhere else). The runs/ folders are not committed; rerun each folder's ``command.txt`` to recreate them.
``seed_spread.json`` / ``.md`` are the output.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sfplus_rerun import cached_records  # noqa: E402


def loss_at(curve: list[dict], tpp: float) -> float:
    """The pooled validation loss at ``tpp`` tokens per parameter, interpolated in log(tokens); NaN outside
    (an end of the curve within 0.1% of ``tpp`` counts as reaching it)."""
    points = sorted((c["tpp"], c["pooled"]) for c in curve)
    for t, loss in points[:1] + points[-1:]:  # a budget's last evaluation lands within a step of it
        if math.isclose(t, tpp, rel_tol=1e-3):
            return loss
    for (t0, l0), (t1, l1) in zip(points, points[1:]):
        if t0 <= tpp <= t1:
            if t1 == t0:
                return l0
            w = (math.log(tpp) - math.log(t0)) / (math.log(t1) - math.log(t0))
            return (1.0 - w) * l0 + w * l1
    return math.nan


def group_name(job: dict, tag: str = "") -> str:
    """Size, method, learning rate and horizon: runs of one job but different lengths are different groups. A
    run file named ``<job id>_<tag>`` (``fixed_alpha.py``'s prescribed paths) is in a group of its own tag."""
    lr = "default" if job.get("lr") is None else f"lr{job['lr']:g}"
    return f"{job['size']} {job['method']} {lr} h{job['horizon_tpp']:g}" + (f" {tag}" if tag else "")


def collect(dirs: list[Path], size: str | None) -> dict[str, dict[int, list[dict]]]:
    """Group -> seed -> curve, each run once (a run file of the same name in two folders is the same run)."""
    groups: dict[str, dict[int, list[dict]]] = {}
    seen: set[str] = set()
    for folder in dirs:
        for path, record in cached_records(folder):
            job = record["job"]
            if (size is not None and job["size"] != size) or path.name in seen or record.get("diverged"):
                continue
            seen.add(path.name)
            tag = path.stem[len(job["id"]) + 1:] if path.stem.startswith(job["id"] + "_") else ""
            groups.setdefault(group_name(job, tag), {})[job["seed"]] = record["curve"]
    return groups


def spread(values: list[float]) -> dict:
    values = sorted(v for v in values if math.isfinite(v))
    if len(values) < 2:
        return {"n": len(values)}
    return {"n": len(values), "mean": statistics.fmean(values), "range": values[-1] - values[0],
            "range_without_lowest": values[-1] - values[1] if len(values) > 2 else math.nan,
            "sd": statistics.stdev(values)}


@functools.cache
def _f_quantiles(dfn: int, dfd: int, level: float) -> tuple[float, float]:
    """The (1 − level)/2 and (1 + level)/2 quantiles of F(dfn, dfd), by Monte Carlo from a fixed generator (2e5
    draws: about 1% on the bounds), so the same inputs always give the same values, with numpy alone; drawn once
    per argument set."""
    draws = np.random.default_rng(0).f(dfn, dfd, 200_000)
    lo_q, hi_q = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo_q), float(hi_q)


def sd_ratio_interval(n_a: int, n_b: int, ratio: float, level: float = 0.9) -> tuple[float, float]:
    """A ``level`` confidence interval for σ_a / σ_b from the ratio of two sample standard deviations over n_a and
    n_b seeds, if each group's losses are normal: (s_a/σ_a)² / (s_b/σ_b)² follows F(n_a − 1, n_b − 1)."""
    lo_q, hi_q = _f_quantiles(n_a - 1, n_b - 1, level)
    return ratio / math.sqrt(hi_q), ratio / math.sqrt(lo_q)


def spread_ratio(a: dict, b: dict, level: float = 0.9) -> dict:
    """Spread ``a`` against spread ``b`` (two ``spread`` results with an sd each): the sd ratio with its ``level``
    interval, and the ratio of ranges (which grows with the number of seeds: compare it between equal counts)."""
    r = a["sd"] / b["sd"]
    return {"sd_ratio": r, "interval": list(sd_ratio_interval(a["n"], b["n"], r, level)),
            "range_ratio": a["range"] / b["range"] if b["range"] else math.nan}


def ratios(rows: list[dict], reference: str, level: float = 0.9) -> list[dict]:
    """Each group's spread against the reference group's at each point (``spread_ratio``)."""
    ref = {p["tpp"]: p for p in next(r for r in rows if r["group"] == reference)["points"]}
    out = []
    for row in rows:
        if row["group"] == reference:
            continue
        points = [{"tpp": p["tpp"], "n": p["n"], "n_ref": ref[p["tpp"]]["n"], **spread_ratio(p, ref[p["tpp"]], level)}
                  for p in row["points"] if p.get("sd") and ref[p["tpp"]].get("sd")]  # fmt: skip
        out.append({"group": row["group"], "points": points})
    return out


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def table(groups: dict[str, dict[int, list[dict]]], at: list[float], min_seeds: int) -> list[dict]:
    rows = []
    for name, seeds in sorted(groups.items()):
        if len(seeds) < min_seeds:
            continue
        losses = {s: [loss_at(seeds[s], t) for t in at] for s in sorted(seeds)}
        points = [{"tpp": t, **spread([losses[s][i] for s in losses])} for i, t in enumerate(at)]
        medians = [_median([losses[s][i] for s in losses]) for i in range(len(at))]
        offsets = {str(s): [v - m for v, m in zip(losses[s], medians)] for s in losses}
        rows.append({"group": name, "seeds": sorted(seeds), "points": points, "offsets": offsets})
    return rows


def _fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="folders with a runs/ subfolder of cached runs")
    ap.add_argument("--size", help="only runs of this model size (e.g. 20k)")
    ap.add_argument("--at", nargs="+", type=float, required=True, help="points of training, in tokens per parameter")
    ap.add_argument("--min-seeds", type=int, default=3, help="skip groups with fewer seeds")
    ap.add_argument("--reference", metavar="TEXT",
                    help="compare every group's spread with the one group whose name contains TEXT")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if any(not (t > 0) for t in args.at):
        raise SystemExit(f"--at takes positive tokens-per-parameter values, got {args.at}")
    rows = table(collect(args.dirs, args.size), sorted(args.at), args.min_seeds)
    if not rows:
        raise SystemExit(f"no group has {args.min_seeds} or more seeds in {[str(d) for d in args.dirs]}")
    doc = {"dirs": [str(d) for d in args.dirs], "size": args.size, "at": sorted(args.at), "groups": rows}
    if args.reference is not None:
        matches = [r["group"] for r in rows if args.reference in r["group"]]
        if len(matches) != 1:
            raise SystemExit(f"--reference {args.reference!r} must name exactly one group; it matches "
                             f"{matches or 'none'} of {[r['group'] for r in rows]}")
        doc["reference"], doc["ratios"] = matches[0], ratios(rows, matches[0])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seed_spread.json").write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")
    lines = ["Validation loss at x over seeds at points of training: mean, range (max − min), range without the "
             "lowest seed, standard deviation.", ""]
    for row in rows:
        lines += [f"**{row['group']}**, seeds {', '.join(map(str, row['seeds']))}", "",
                  "| tokens/param | n | mean | range | range without lowest | sd |", "|---|---|---|---|---|---|"]
        for p in row["points"]:
            lines.append(f"| {p['tpp']:g} | {p['n']} | {_fmt(p.get('mean'))} | {_fmt(p.get('range'))} | "
                         f"{_fmt(p.get('range_without_lowest'))} | {_fmt(p.get('sd'))} |")
        lines += ["", "Each seed's loss minus the group's median:", "",
                  "| seed | " + " | ".join(f"{t:g}" for t in doc["at"]) + " |", "|---" * (len(doc["at"]) + 1) + "|"]
        for seed, values in row["offsets"].items():
            cells = ("" if not math.isfinite(v) else f"{v:+.3f}" for v in values)
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
        lines.append("")
    if "ratios" in doc:
        lines += [f"Spread against **{doc['reference']}**: the ratio of standard deviations with a 90% interval "
                  "(normal seeds, F distribution), and the ratio of ranges (max − min; larger for more seeds).", "",
                  "| group | tokens/param | seeds (reference) | sd ratio | 90% interval | range ratio |",
                  "|---|---|---|---|---|---|"]
        for row in doc["ratios"]:
            for p in row["points"]:
                lo, hi = p["interval"]
                lines.append(f"| {row['group']} | {p['tpp']:g} | {p['n']} ({p['n_ref']}) | {p['sd_ratio']:.2f} | "
                             f"{lo:.2f}-{hi:.2f} | {_fmt(p['range_ratio'], 2)} |")
        lines.append("")
    (args.out / "seed_spread.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
