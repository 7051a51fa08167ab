"""``sfplus predict`` checked against runs whose final loss is known (docs/averaging.md, "How good is it").

    python benchmarks/predict_check.py [--fractions 0.3 0.5] RESULTS.json... RUN_DIR...

For every ScheduleFree+ curve in the benchmark results files (the anytime curves, evaluated 12 times per
decade; a diverged run is skipped) and every lab run folder, fits the first fraction of the curve exactly
as ``sfplus predict`` does (from ``fit_start``: after the warm start and twice the warmup) and compares the
prediction at the last evaluation with the measured value. Prints a markdown table and, per fraction, the
median absolute error and how often the error was within two jackknife standard errors.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from sfplus_lab.errors import UserError
from sfplus_lab.optim_factory import is_tuned
from sfplus_lab.predict import fit_start, predict_rows, predict_run, read_eval_rows


def bench_curves(path: Path):
    """(name, rows in steps, first fitted step) of each finite ScheduleFree+ anytime curve of a results.json."""
    doc = json.loads(path.read_text())
    start = fit_start(doc.get("sfplus_config"))
    for size, block in doc["sizes"].items():
        for name, run in block["anytime"].items():
            if is_tuned(run["method"]):  # a baseline; the fixed rows are ScheduleFree+ configurations
                continue
            per_step = run["tokens_per_step"] / run["num_params"]
            rows = sorted({round(tpp / per_step): y for tpp, y in run["curve"] if math.isfinite(y)}.items())
            if rows and rows[-1][1] < rows[0][1]:  # diverged runs end above their start: nothing to predict
                yield f"{path.parent.name} {size} {name}", rows, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="bench results.json files and lab run folders")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.3, 0.5])
    args = parser.parse_args()
    print("| run | steps | fraction | fitted steps | predicted ± s.e. | measured | error |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    errors: dict[float, list[tuple[float, float | None]]] = {f: [] for f in args.fractions}
    for source in map(Path, args.sources):
        for fraction in args.fractions:
            try:
                if source.suffix == ".json":
                    found = [(n, predict_rows(r, fraction=fraction, target_step=r[-1][0], start=s, name=n))
                             for n, r, s in bench_curves(source)]
                else:
                    last = read_eval_rows(source, "val_loss")[-1][0]
                    found = [(str(source), predict_run(source, fraction=fraction, target_step=last))]
            except UserError as exc:
                print(f"| {source} | | {fraction:g} | cannot predict: {exc} | | | |")
                continue
            for name, p in found:
                se = "" if p.stderr is None else f" ± {p.stderr:.3f}"
                widened = " (widened)" if p.note and "held fewer" in p.note else ""
                widened += " (plateau)" if p.note and "stopped falling" in p.note else ""
                print(f"| {name} | {p.target_step} | {fraction:g} | {p.fit_from_step}-{p.fit_until_step}{widened} | "
                      f"{p.predicted:.3f}{se} | {p.actual:.3f} | {100 * p.rel_error:+.1f}% |")
                errors[fraction].append((p.rel_error, p.stderr and p.stderr / p.actual))
    for fraction, got in errors.items():
        if got:
            within = sum(1 for e, s in got if s is not None and abs(e) <= 2 * s)
            median = statistics.median(abs(e) for e, _ in got)
            print(f"\nfraction {fraction:g}: {len(got)} runs, median |error| {100 * median:.1f}%, "
                  f"max {100 * max(abs(e) for e, _ in got):.1f}%, within 2 s.e. {within}/{len(got)}")


if __name__ == "__main__":
    main()
