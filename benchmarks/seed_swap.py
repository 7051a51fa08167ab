"""Which half of a seed decides a run's outcome: the model's initialisation or the order of its batches?

In the benchmark a run's seed sets both (``torch.manual_seed(seed)`` before the model is built, and
``get_batch(seed, step)`` for every training batch). This script trains configurations of a finished
``sfplus bench`` results file, like ``benchmarks/sfplus_rerun.py`` (one anytime run to the file's horizon, the
file's corpus, model, batches and evaluation), but with the two separated: ``--pairs 2:0`` builds the model as
seed 2 does and feeds it seed 0's batches. Crossing a seed that ends unusually well with ordinary ones shows
whether its luck travels with its initialisation or with its data:

    python benchmarks/seed_swap.py benchmarks/results/quality_cpu_debian_20k_1000/results.json \\
        --sizes 20k --configs sfplus --pairs 2:0 0:2 2:3 3:2 --out benchmarks/results/seed_swap_20k

Runs are cached in ``<out>/runs/`` (not committed) and reused, as ``<job id>_data<D>.json``: the job's seed is the
initialisation's, the name's ``D`` the batches'; ``<out>/seed_swap.json`` and ``seed_swap.md``
hold each pair's final pooled loss per budget. A pair ``s:s`` is the ordinary run of seed ``s`` (the one
``sfplus_rerun.py`` trains). A diagnostic: it reaches into the runner to swap the batches' seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sfplus_rerun import _run, anytime_job, bench_config, file_sizes  # noqa: E402

from sfplus_lab.atomic import write_atomic  # noqa: E402
from sfplus_lab.bench import runner  # noqa: E402
from sfplus_lab.bench.config import SFPLUS_CONFIGS  # noqa: E402


def parse_pair(text: str) -> tuple[int, int]:
    """``"INIT:DATA"`` -> (init seed, data seed)."""
    init, sep, data = text.partition(":")
    try:
        if not sep:
            raise ValueError
        pair = int(init), int(data)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INIT:DATA (two seeds), got {text!r}") from None
    if min(pair) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {text!r}")
    return pair


@contextlib.contextmanager
def data_seed(seed: int) -> Iterator[None]:
    """Within the block the runner's batches come from ``seed`` whatever the job's seed is."""
    original = runner.get_batch

    def swapped(*args, **kwargs):
        kwargs["seed"] = seed
        return original(*args, **kwargs)

    runner.get_batch = swapped
    try:
        yield
    finally:
        runner.get_batch = original


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a results.json written by sfplus bench")
    ap.add_argument("--configs", nargs="+", default=["sfplus"], help="ScheduleFree+ configurations (SFPLUS_CONFIGS)")
    ap.add_argument("--pairs", nargs="+", type=parse_pair, required=True, help="INIT:DATA seed pairs")
    ap.add_argument("--sizes", nargs="+", help="sizes of the file (default: all)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for name in args.configs:
        if name not in SFPLUS_CONFIGS:
            ap.error(f"unknown configuration {name!r}; choose from {', '.join(sorted(SFPLUS_CONFIGS))}")
    doc = json.loads(args.results.read_text())
    sizes = file_sizes(ap, doc, args.results, args.sizes)
    cfg = bench_config(doc)
    budgets = sorted(float(b) for b in cfg.budgets)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:
        for config in args.configs:
            for init, data in args.pairs:
                job = anytime_job(size, config, init, budgets, cfg)  # its seed: the initialisation
                with data_seed(data):  # the run file's name, not its job, says whose batches it saw
                    record = _run((job, cfg, args.out / "runs" / f"{job.id}_data{data}.json"))
                finals = {b: v["pooled"] for b, v in record["finals"].items()}
                rows.append({"size": size, "config": config, "init_seed": init, "data_seed": data, "finals": finals})
                print(size, config, f"init {init} data {data}", {b: round(v, 4) for b, v in finals.items()}, flush=True)
    write_atomic(args.out / "seed_swap.json", json.dumps({"source": str(args.results), "rows": rows}, indent=1) + "\n")
    names = [f"{b:g}" for b in budgets]
    lines = ["| size | config | init seed | data seed | " + " | ".join(f"{n} tok/param" for n in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]  # fmt: skip
    for r in rows:
        cells = " | ".join(f"{r['finals'][n]:.4f}" if n in r["finals"] else "-" for n in names)
        lines.append(f"| {r['size']} | {r['config']} | {r['init_seed']} | {r['data_seed']} | {cells} |")
    write_atomic(args.out / "seed_swap.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
