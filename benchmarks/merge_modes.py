"""Validation loss of ``sfplus merge``'s modes against the last checkpoint, on real lab runs.

    python benchmarks/merge_modes.py RUN [RUN ...]

Each RUN is an ``sfplus train`` folder with several checkpoints (``--checkpoint-every N --keep-checkpoints
M``). For windows of 1, 2, 4, half and all-but-one checkpoint spacings and for uniform/online merges of the
last 2, 3, half and all checkpoints, prints a markdown table of the pooled validation loss at x and its
difference from the last checkpoint (docs/averaging.md, "What merging did").
"""

from __future__ import annotations

import os
import sys

import torch

from sfplus_lab import averaging


def val_loss(paths: list[str], mode: str) -> float:
    weights, config = averaging.merge_checkpoints(paths, mode)
    return averaging.evaluate_weights(config, weights)["val_loss"]


def measure(run: str) -> None:
    found = sorted(e for e in os.scandir(os.path.join(run, "checkpoints")) if e.name.startswith("step_"))
    paths, steps = [e.path for e in found], [int(e.name[5:]) for e in found]
    last = val_loss(paths[-1:], "uniform")
    print(f"## {run}: last checkpoint step {steps[-1]}: val {last:.4f}")
    print("| merge | checkpoints (steps) | val | vs last |")
    print("|---|---|---:|---:|")

    def row(mode: str, idx: list[int]) -> None:
        v = val_loss([paths[i] for i in idx], mode)
        print(f"| {mode} | {','.join(str(steps[i]) for i in idx)} | {v:.4f} | {v - last:+.4f} |", flush=True)

    n = len(paths)
    for k in (1, 2, 4, n // 2, n - 1):
        if 0 < k < n:
            row("window", [n - 1 - k, n - 1])
    for m in (2, 3, n // 2, n):
        row("uniform", list(range(n - m, n)))
        row("online", list(range(n - m, n)))


if __name__ == "__main__":
    torch.set_num_threads(1)
    for run in sys.argv[1:]:
        measure(run)
