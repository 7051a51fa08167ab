"""P_1, the Polyak factor of the untrained model, by model size: where the ratio bound's cap R·P_1 lies.

The safeguard ``max_step_ratio`` (R) bounds the Polyak factor by R·P_1, where P_1 = F_1 / ê_1 is the first
step's (docs/algorithm.md, "The safeguards"); it was on in the library's default until the tenth session (R = 0.5
there). On the benchmark's GPTs P_1 fell about as 1/N while the tuned learning rate fell more slowly, so the cap
comes closer to the tuned learning rate, and then below it, as the model grows. This script measures P_1
without training: for each size and seed it builds the lab's GPT as ``sfplus train --model SIZE --seed S`` does
(same initialisation, same first batch), takes one ScheduleFree+ step with the library's defaults and reads F_1
and ê_1 from ``optimizer.stats``:

    python benchmarks/first_polyak.py --sizes 6k 20k 50k 100k 250k 1m 10m 100m --seeds 0 1 2 \\
        --out benchmarks/results/first_polyak

It writes ``<out>/first_polyak.json`` (every seed) and ``<out>/first_polyak.md`` (the median per size, the cap
at ``--ratio`` (0.5) and the least-squares slope of log P_1 against log N). One step of the 100M model takes
about a minute and a few GB on one CPU thread; the small sizes take well under a second.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from sfplus_lab.config import CheckpointConfig, DataConfig, RunConfig, TrainConfig
from sfplus_lab.model import PRESETS
from sfplus_lab.optim_factory import OptimConfig

#: The optimizer's stats kept for each seed.
_FIELDS = ("loss", "l1", "e_hat", "alpha")


@functools.cache
def _corpus(data: tuple[str, ...] | None) -> Any:
    """The tokenised corpus (bytes), read once for every size and seed."""
    from sfplus_lab.data import load_corpus

    return load_corpus(list(data) if data else None)


def first_step(size: str, seed: int, *, batch_size: int, seq_len: int, data: list[str] | None) -> dict[str, Any]:
    """One default ScheduleFree+ step of the lab's GPT of ``size`` with ``seed``: its parameters, F_1, ê_1, P_1."""
    from sfplus_lab.trainer import Trainer

    cfg = RunConfig(
        data=DataConfig(batch_size=batch_size, seq_len=seq_len, paths=data),
        optim=OptimConfig(),
        train=TrainConfig(model_size=size, tokens=batch_size * seq_len, seed=seed, progress=False),
        checkpoint=CheckpointConfig(every=0, keep=2),
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, _corpus(tuple(data) if data else None), Path(tmp))
        row = trainer.train_step()
        params = trainer.model.num_params()
    if row.get("status") != "ok":
        raise SystemExit(f"{size} seed {seed}: the first step did not go through ({row.get('status')})")
    out = {key: float(row[key]) for key in _FIELDS}
    out.update(params=params, P1=out["loss"] / out["e_hat"])  # step 1: I = 0, so P_1 = F_1 / ê_1
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of log y against log x."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def table(doc: dict[str, Any], ratio: float) -> str:
    lines = [
        f"P_1 = F_1 / ê_1 of the untrained lab GPT (one default step; batch {doc['batch_size']} × {doc['seq_len']}, "
        f"data: {doc['data'] or 'built-in text'}); median over seeds {doc['seeds']}. The cap is R·P_1 with "
        f"R = {ratio:g} (`max_step_ratio`; the library's default in the tenth session, off from the eleventh).",
        "",
        "| size | parameters | F_1 | ‖g‖₁ (median) | P_1 median (min-max) | cap R·P_1 |",
        "|---|---|---|---|---|---|",
    ]
    points = []
    for size, entry in doc["sizes"].items():
        runs = list(entry["seeds"].values())
        p1 = [r["P1"] for r in runs]
        med = statistics.median(p1)
        points.append((entry["params"], med))
        lines.append(f"| {size} | {entry['params']:,} | {statistics.median(r['loss'] for r in runs):.3f} | "
                     f"{statistics.median(r['l1'] for r in runs):,.1f} | {med:.3g} ({min(p1):.3g}-{max(p1):.3g}) | "
                     f"{ratio * med:.3g} |")
    if len(points) >= 2:
        lines += ["", f"Least-squares slope of log P_1 against log N over these sizes: **{slope(points):.2f}**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["6k", "20k", "50k", "100k", "250k", "1m", "10m"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per step (the lab's default: 16)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (the lab's default: 128)")
    ap.add_argument("--data", nargs="+", default=None, help="as sfplus train --data (default: built-in text)")
    ap.add_argument("--ratio", type=float, default=0.5, help="R of the table's cap column (default 0.5)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    unknown = [s for s in args.sizes if s.lower() not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    ratio = args.ratio
    doc: dict[str, Any] = {"batch_size": args.batch_size, "seq_len": args.seq_len, "data": args.data,
                           "seeds": args.seeds, "max_step_ratio": ratio, "sizes": {}}
    for size in args.sizes:
        entry: dict[str, Any] = {"seeds": {}}
        for seed in args.seeds:
            run = first_step(size, seed, batch_size=args.batch_size, seq_len=args.seq_len, data=args.data)
            entry["params"] = run.pop("params")
            entry["seeds"][str(seed)] = run
            print(f"{size} seed {seed}: P_1 = {run['P1']:.4g} (F_1 {run['loss']:.4f}, ‖g‖₁ {run['l1']:.1f})",
                  flush=True)
        doc["sizes"][size] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "first_polyak.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "first_polyak.md").write_text(table(doc, ratio))
    print(table(doc, ratio), end="")


if __name__ == "__main__":
    sys.exit(main())
