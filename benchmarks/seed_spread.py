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
import json
import math
import statistics
import sys
from pathlib import Path

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


def group_name(job: dict) -> str:
    """Size, method, learning rate and horizon: runs of one job but different lengths are different groups."""
    lr = "default" if job.get("lr") is None else f"lr{job['lr']:g}"
    return f"{job['size']} {job['method']} {lr} h{job['horizon_tpp']:g}"


def collect(dirs: list[Path], size: str | None) -> dict[str, dict[int, list[dict]]]:
    """Group -> seed -> curve, each run once (the same run id in two folders is the same run)."""
    groups: dict[str, dict[int, list[dict]]] = {}
    seen: set[str] = set()
    for folder in dirs:
        for _, record in cached_records(folder):
            job = record["job"]
            if (size is not None and job["size"] != size) or job["id"] in seen or record.get("diverged"):
                continue
            seen.add(job["id"])
            groups.setdefault(group_name(job), {})[job["seed"]] = record["curve"]
    return groups


def spread(values: list[float]) -> dict:
    values = sorted(v for v in values if math.isfinite(v))
    if len(values) < 2:
        return {"n": len(values)}
    return {"n": len(values), "mean": statistics.fmean(values), "range": values[-1] - values[0],
            "range_without_lowest": values[-1] - values[1] if len(values) > 2 else math.nan,
            "sd": statistics.stdev(values)}


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
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if any(not (t > 0) for t in args.at):
        raise SystemExit(f"--at takes positive tokens-per-parameter values, got {args.at}")
    rows = table(collect(args.dirs, args.size), sorted(args.at), args.min_seeds)
    if not rows:
        raise SystemExit(f"no group has {args.min_seeds} or more seeds in {[str(d) for d in args.dirs]}")
    doc = {"dirs": [str(d) for d in args.dirs], "size": args.size, "at": sorted(args.at), "groups": rows}
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
    (args.out / "seed_spread.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
