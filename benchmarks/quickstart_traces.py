"""Compact per-step traces of ScheduleFree+ runs of the quickstart (``sfplus train``), and one figure.

    python benchmarks/quickstart_traces.py RUN_DIR:label [RUN_DIR:label ...] --out benchmarks/results/traces

For each run folder: ``<label>.csv`` with step, tokens, F (train loss), alpha, I, ||g||_1, e_hat, c, beta and
alpha^2 lambda (lambda read from the run's config.json), plus the validation loss at x where evaluated;
``finals.json`` with each run's last validation loss at x (runs of other optimizers, without alpha, give only
that); and ``quickstart_traces.png`` with alpha, ||g||_1 and the validation loss of every run against steps.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from sfplus_lab.metrics import read_metrics

COLUMNS = ("step", "tokens", "loss", "alpha", "inner", "l1", "e_hat", "c", "beta")


def read_run(folder: Path) -> tuple[list[dict], list[dict], float]:
    rows = read_metrics(folder / "metrics.jsonl")
    train = [r for r in rows if r.get("kind") == "train" and "alpha" in r]
    evals = [r for r in rows if "val_loss" in r]
    lam = float(json.loads((folder / "config.json").read_text())["optim"]["weight_decay"])
    return train, evals, lam


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN_DIR:label")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    finals: dict[str, dict] = {}
    for spec in args.runs:
        folder, label = spec.rsplit(":", 1)
        train, evals, lam = read_run(Path(folder))
        val = {r["step"]: r["val_loss"] for r in evals}
        with open(out / f"{label}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*COLUMNS, "alpha2_lambda", "val_loss_at_x"])
            last = len(train) - 1
            for r in (r for i, r in enumerate(train) if i % 2 == 0 or i == last):  # every other step, and the last
                w.writerow([*(r.get(c) for c in COLUMNS), r["alpha"] ** 2 * lam, val.get(r["step"], "")])
        steps = [r["step"] for r in train]
        axes[0].plot(steps, [r["alpha"] for r in train], label=label, lw=1)
        axes[1].plot(steps, [r["l1"] for r in train], label=label, lw=0.8)
        final = evals[-1]["val_loss"]
        finals[label] = {"step": evals[-1]["step"], "val_loss_at_x": final,
                         "alpha_last": train[-1]["alpha"] if train else None}  # fmt: skip
        axes[2].plot([r["step"] for r in evals], [r["val_loss"] for r in evals], label=f"{label} ({final:.3f})")
    titles = ("emergent step alpha", "||g||_1 (the Polyak denominator's input)", "validation loss at x")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "quickstart_traces.png", dpi=110)
    (out / "finals.json").write_text(json.dumps(finals, indent=1) + "\n")
    print(f"wrote {len(args.runs)} traces and {out / 'quickstart_traces.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
