"""Tokens per second of the lab's training loop with ScheduleFree+ against AdamW (cosine), same model and batch.

    python benchmarks/train_throughput.py --sizes 50k 1m --tokens 300k --repeats 2

Runs ``sfplus train`` for each size, alternating the two optimizers (ABAB...), and reports the median
steady-state tokens/s (the last three quarters of the logged steps) of each and their ratio. The whole
training step is timed (forward, backward, optimizer step, logging), which is what a user sees.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sfplus_lab.metrics import read_metrics


def tokens_per_second(out: Path) -> float:
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") == "train" and r.get("tok_per_s")]
    rates = [r["tok_per_s"] for r in rows]
    return statistics.median(rates[len(rates) // 4 :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["50k", "1m"])
    parser.add_argument("--tokens", default="300k")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", default="adamw-cosine")
    args = parser.parse_args(argv)
    print("| model | ScheduleFree+ tok/s | AdamW tok/s | ratio (median of runs) |\n|---|---|---|---|")
    for size in args.sizes:
        rates: dict[str, list[float]] = {"sfplus": [], args.baseline: []}
        for _ in range(args.repeats):
            for opt in rates:
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "run"
                    cmd = [sys.executable, "-m", "sfplus", "train", "--out", str(out), "--model", size, "--tokens",
                           args.tokens, "--optimizer", opt, "--no-progress", "--eval-every", "1000000",
                           "--evals-per-decade", "0"]  # fmt: skip
                    subprocess.run(cmd, check=True, capture_output=True)
                    rates[opt].append(tokens_per_second(out))
        sf, base = statistics.median(rates["sfplus"]), statistics.median(rates[args.baseline])
        print(f"| {size} | {sf:,.0f} | {base:,.0f} | {sf / base:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
