"""The default against tuned baselines cell by cell, each side with its own seeds, read from committed files.

A benchmark picks a baseline's learning rate on one seed and reports that seed among the ones it averages, so a
baseline measured with two seeds is the lucky side of a selection, and a half-range over two or four seeds is
smaller than one over sixteen from the same spread. This script puts side by side what the result files hold
for one cell: the default's seeds (a ``sfplus_rerun.py`` ``rerun.json`` or a ``sfplus bench`` ``results.json``)
and each baseline's (a ``baseline_seeds.py`` ``baseline_seeds.json``, or a ``results.json`` cell), with the mean,
half-range and standard deviation of each, the default's mean against the lowest baseline mean, and the ratio of
spreads (half-range, and standard deviation with a 90% interval from the F distribution).

    python benchmarks/matched_seeds.py benchmarks/results/matched_seeds/cells.json \
        --out benchmarks/results/matched_seeds

``cells.json`` is a list of cells: ``{"cell": "20k / 100", "ours": SOURCE, "baselines": [SOURCE, ...]}``, where a
SOURCE is ``{"label": ..., "file": ..., ...}`` with ``"key"`` (and ``"size"``) for a rerun.json
(``"sfplus@100"``), ``"run_id"`` and ``"budget"`` for a baseline_seeds.json, or ``"size"``, ``"method"`` and
``"budget"`` for a results.json cell. ``matched_seeds.json`` / ``.md`` are the output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_spread import spread, spread_ratio  # noqa: E402


def seed_values(source: dict, root: Path) -> list[float]:
    """The final pooled losses a source names, one per seed; a missing file, key or cell is an error naming it."""
    path = root / source["file"]
    if not path.exists():
        raise SystemExit(f"{source['file']}: no such file")
    doc = json.loads(path.read_text())
    try:
        if "key" in source:  # sfplus_rerun.py's rerun.json
            return list(doc["sizes"][source["size"]]["finals"][source["key"]])
        if "run_id" in source:  # baseline_seeds.py's baseline_seeds.json
            return list(doc[source["run_id"]]["finals"][f"{float(source['budget']):g}"].values())
        cells = [c for c in doc["sizes"][source["size"]]["cells"]
                 if c["method"] == source["method"] and c["budget"] == float(source["budget"])]  # fmt: skip
        if len(cells) != 1:
            raise KeyError(f"{source['method']} at {source['budget']}")
        return list(cells[0]["final_pooled"])
    except KeyError as exc:
        raise SystemExit(f"{source['file']} has no {exc} for {source.get('label', source)}") from None


def compare(ours: list[float], baselines: dict[str, list[float]]) -> dict:
    """Statistics of each side, and the default against the baseline with the lowest mean."""
    mine = spread(ours)
    theirs = {label: spread(values) for label, values in baselines.items()}
    best = min(theirs, key=lambda label: theirs[label]["mean"])
    b = theirs[best]
    ratio = spread_ratio(mine, b)
    return {"ours": mine, "baselines": theirs, "best": best,
            "mean_diff_pct": 100.0 * (mine["mean"] / b["mean"] - 1.0),
            "half_range_ratio": ratio["range_ratio"], "sd_ratio": ratio["sd_ratio"],
            "sd_ratio_interval": ratio["interval"]}  # fmt: skip


def _side(s: dict) -> str:
    return f"{s['mean']:.4f} ±{s['range'] / 2:.4f} (sd {s['sd']:.4f}, n={s['n']})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", type=Path, help="a JSON list of cells (see the module docstring)")
    ap.add_argument("--root", type=Path, default=Path("."), help="the folder the files are relative to")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ours", default="the default", help="what the table calls the cells' ours side")
    args = ap.parse_args(argv)
    rows = []
    for cell in json.loads(args.cells.read_text()):
        ours = seed_values(cell["ours"], args.root)
        baselines = {src["label"]: seed_values(src, args.root) for src in cell["baselines"]}
        for label, values in {args.ours: ours, **baselines}.items():
            if len(values) < 2:
                raise SystemExit(f"{cell['cell']}: {label} has {len(values)} seed(s); a spread needs 2 or more")
        rows.append({"cell": cell["cell"], **compare(ours, baselines)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "matched_seeds.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["Final validation loss at x: mean ±half-range (standard deviation, seeds). "
             f"{args.ours[:1].upper() + args.ours[1:]} against the baseline with the lowest mean; sd ratio with a "
             "90% interval (normal seeds, F distribution).", "",
             f"| cell | {args.ours} | baselines | vs the lowest | half-range ratio | sd ratio (90%) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        base = "; ".join(f"{label} {_side(s)}" for label, s in r["baselines"].items())
        lo, hi = r["sd_ratio_interval"]
        lines.append(f"| {r['cell']} | {_side(r['ours'])} | {base} | {r['mean_diff_pct']:+.2f}% ({r['best']}) | "
                     f"{r['half_range_ratio']:.2f} | {r['sd_ratio']:.2f} ({lo:.2f}-{hi:.2f}) |")
    (args.out / "matched_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
