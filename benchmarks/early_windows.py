"""Window means of the traced first steps of ``early_steps.py`` runs: how configurations differ phase by phase.

``early_steps.json`` keeps every step's α, loss F, L1 norm ‖g‖₁ and its running estimate ê for the first
``--keep`` steps of every seed. This script averages each statistic over windows of steps, then over the seeds,
for several files side by side, and writes a markdown table (and prints it):

    python benchmarks/early_windows.py default=benchmarks/results/screen_20k_200tpp/sfplus/early_steps.json \\
        pb099=benchmarks/results/screen_20k_200tpp/pb099/early_steps.json --out benchmarks/results/early_windows.md

Steps are counted from 1; the window ``a-b`` holds steps a to b - 1. Reads only the files named.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

STATS = ("alpha", "l1", "e_hat", "loss")
DEFAULT_EDGES = (1, 25, 50, 100, 150, 200, 300, 400)


def window_means(path: Path, edges: list[int]) -> dict[str, list[float]]:
    """Per statistic, the mean over the seeds of each window's mean (windows past a run's trace are skipped)."""
    runs = json.loads(path.read_text())["runs"]
    if not runs:
        raise SystemExit(f"{path} has no runs")
    out: dict[str, list[float]] = {}
    for stat in STATS:
        row = []
        for a, b in zip(edges, edges[1:]):
            per_seed = [statistics.fmean(run["rows"][stat][a - 1 : b - 1]) for run in runs
                        if len(run["rows"][stat]) >= b - 1]  # fmt: skip
            row.append(statistics.fmean(per_seed) if per_seed else float("nan"))
        out[stat] = row
    return out


def table(files: dict[str, Path], edges: list[int]) -> str:
    means = {label: window_means(path, edges) for label, path in files.items()}
    head = "| statistic | configuration | " + " | ".join(f"steps {a}-{b}" for a, b in zip(edges, edges[1:])) + " |"
    lines = [head, "|" + "---|" * (len(edges) + 1)]
    fmt = {"alpha": "{:.4f}", "l1": "{:.2f}", "e_hat": "{:.2f}", "loss": "{:.3f}"}
    for stat in STATS:
        for label, m in means.items():
            lines.append(f"| {stat} | {label} | " + " | ".join(fmt[stat].format(v) for v in m[stat]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="LABEL=path/to/early_steps.json")
    parser.add_argument("--edges", nargs="+", type=int, default=list(DEFAULT_EDGES), help="window edges (steps)")
    parser.add_argument("--out", help="write the table here too")
    args = parser.parse_args(argv)
    files = {}
    for spec in args.files:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"{spec!r}: expected LABEL=path to an existing early_steps.json")
        files[label] = Path(path)
    if len(args.edges) < 2 or any(b <= a for a, b in zip(args.edges, args.edges[1:])) or args.edges[0] < 1:
        parser.error("--edges: at least two increasing steps, the first at least 1")
    text = table(files, args.edges)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
