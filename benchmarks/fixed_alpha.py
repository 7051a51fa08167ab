"""Does a ScheduleFree+ run's outcome follow its own step size? Train with α prescribed instead of computed.

The default's Polyak step α_k depends on the run's own loss and gradients, so two seeds take different step
sizes. This script trains configurations of a finished ``sfplus bench`` results file, like
``benchmarks/sfplus_rerun.py`` (one anytime run to the file's horizon, the file's corpus, model, batches and
evaluation), with every seed given the *same* step-size path:

- ``--median-of DIR...``: the median over the seeds of the α traces cached in ``DIR/runs/`` (runs of the
  same size and configuration), interpolated linearly between traced steps;
- ``--constant A``: α = A after a linear ramp over ``--ramp`` steps (a learning rate, for comparison);
- ``--median-of DIR... --floor A`` / ``--cap A``: the median path held at or above / at or below A after the
  ramp, which keeps one part of the path (the early peak, or the late decay) and replaces the other by A.

If the seeds then end as close together as a tuned baseline's, the spread came from each seed's own α; if they
still spread, from elsewhere. A diagnostic: it sets each param group's ``max_step`` (α_cap) to the path's value
before every step, from a torch optimizer step pre-hook, and ``lr`` (γ) so large that the cap always binds.

    python benchmarks/fixed_alpha.py benchmarks/results/quality_cpu_debian_20k_1000/results.json --size 20k \\
        --median-of benchmarks/results/seeds16_20k --seeds 0 1 2 3 --out benchmarks/results/fixed_alpha_20k

Runs are cached in ``<out>/runs/`` (not committed) as ``<job id>_<tag>.json`` and reused; the tag names the
path (``median``, ``median_floorA``, ``median_capA`` or ``constA``, after the configuration's name when it is not
``sfplus``). ``<out>/fixed_alpha_<tag>.json`` and ``.md`` hold each seed's final pooled loss per budget and how
closely the run followed the path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_spread import spread  # noqa: E402
from sfplus_rerun import _run, anytime_job, bench_config, cached_records, file_sizes, register_variants  # noqa: E402

from sfplus import ScheduleFreePlus  # noqa: E402
from sfplus_lab.atomic import write_atomic  # noqa: E402

#: γ while a path is prescribed: large enough that γ·P exceeds the path's α whenever P > 0.
_HUGE_GAMMA = 1e12


def median_path(dirs: list[Path], size: str, config: str) -> np.ndarray:
    """α at steps 1, 2, ...: the median over the cached runs' traces, each interpolated between traced steps, up
    to the last step every trace has (``prescribed_alpha`` holds the last value after it)."""
    traces = []
    for folder in dirs:
        for _, record in cached_records(folder):
            job = record["job"]
            if job["size"] != size or job["method"] != config or "alpha" not in record.get("trace", {}):
                continue
            traces.append(record["trace"])
    if len(traces) < 2:
        raise SystemExit(f"need the traces of at least 2 runs of {size} {config} in {[str(d) for d in dirs]}, "
                         f"found {len(traces)}")
    steps = np.arange(1, min(t["step"][-1] for t in traces) + 1)
    return np.median(np.stack([np.interp(steps, t["step"], t["alpha"]) for t in traces]), axis=0)


def constant_path(alpha: float, ramp: int, steps: int) -> np.ndarray:
    k = np.arange(1, steps + 1, dtype=np.float64)
    return alpha * np.minimum(1.0, k / ramp) if ramp > 0 else np.full(steps, alpha)


@contextlib.contextmanager
def prescribed_alpha(path: np.ndarray) -> Iterator[None]:
    """Within the block every ScheduleFree+ step k takes α = ``path[k - 1]`` (the last value past its end)."""
    counts: dict[int, int] = {}

    def before_step(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if not isinstance(opt, ScheduleFreePlus):
            return
        k = counts[id(opt)] = counts.get(id(opt), 0) + 1
        alpha = float(path[min(k, len(path)) - 1])
        for group in opt.param_groups:
            group["lr"] = _HUGE_GAMMA
            group["max_step"] = alpha

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        yield
    finally:
        handle.remove()


def tracking_error(record: dict, path: np.ndarray) -> float:
    """The largest relative gap between the run's traced α and the path (0 when it followed exactly)."""
    trace = record["trace"]
    want = [float(path[min(s, len(path)) - 1]) for s in trace["step"]]
    gaps = [abs(a - w) / w for a, w in zip(trace["alpha"], want) if w > 0]
    return max(gaps) if gaps else math.nan


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a results.json written by sfplus bench")
    ap.add_argument("--size", required=True, help="a size of the file")
    ap.add_argument("--config", default="sfplus", help="a configuration of SFPLUS_CONFIGS or a --variant")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="a probe, as in sfplus_rerun.py: OptimConfig fields over the library's default")
    ap.add_argument("--seeds", nargs="+", type=int, required=True)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--median-of", nargs="+", type=Path, metavar="DIR", help="folders of cached runs")
    source.add_argument("--constant", type=float, metavar="A", help="a constant α after the ramp")
    ap.add_argument("--ramp", type=int, default=50, help="steps of the linear ramp to --constant (or --floor)")
    ap.add_argument("--floor", type=float, help="with --median-of: α at least this after the ramp")
    ap.add_argument("--cap", type=float, help="with --median-of: α at most this")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    known = register_variants(ap, args.variant)
    if args.config not in known:
        ap.error(f"unknown configuration {args.config!r}; choose from {', '.join(sorted(known))}")
    for name in ("constant", "floor", "cap"):
        value = getattr(args, name)
        if value is not None and not (0.0 < value < math.inf):
            ap.error(f"--{name} must be a positive step size, got {value}")
    if (args.floor is not None or args.cap is not None) and not args.median_of:
        ap.error("--floor and --cap shape a --median-of path")
    if args.ramp < 0 or min(args.seeds) < 0:
        ap.error("--ramp and --seeds must be >= 0")
    doc = json.loads(args.results.read_text())
    file_sizes(ap, doc, args.results, [args.size])
    cfg = bench_config(doc)
    budgets = sorted(float(b) for b in cfg.budgets)
    if args.median_of:
        path, tag = median_path(args.median_of, args.size, args.config), "median"
        if args.floor is not None:
            path, tag = np.maximum(path, constant_path(args.floor, args.ramp, len(path))), f"{tag}_floor{args.floor:g}"
        if args.cap is not None:
            path, tag = np.minimum(path, args.cap), f"{tag}_cap{args.cap:g}"
    else:
        path, tag = constant_path(args.constant, args.ramp, max(args.ramp, 1)), f"const{args.constant:g}"
    if args.config != "sfplus":
        tag = f"{args.config}_{tag}"
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        job = anytime_job(args.size, args.config, seed, budgets, cfg)
        with prescribed_alpha(path):
            record = _run((job, cfg, args.out / "runs" / f"{job.id}_{tag}.json"))
        finals = {b: v["pooled"] for b, v in record["finals"].items()}
        rows.append({"seed": seed, "finals": finals, "tracking_error": tracking_error(record, path)})
        print(args.size, args.config, tag, f"seed {seed}", {b: round(v, 4) for b, v in finals.items()}, flush=True)
    out = {"source": str(args.results), "size": args.size, "config": args.config, "tag": tag,
           "median_of": [str(d) for d in args.median_of or []], "constant": args.constant, "floor": args.floor,
           "cap": args.cap, "ramp": args.ramp,
           "path": {str(s): float(path[min(s, len(path)) - 1]) for s in (1, 10, 50, 100, 300, 1000, 3000, 10000)},
           "rows": rows}
    write_atomic(args.out / f"fixed_alpha_{tag}.json", json.dumps(out, indent=1) + "\n")
    names = [f"{b:g}" for b in budgets]
    lines = [f"{args.size} {args.config}, α prescribed ({tag}); α at steps "
             + ", ".join(f"{s}: {a:.4g}" for s, a in out["path"].items()), "",
             "| seed | " + " | ".join(f"{n} tok/param" for n in names) + " | largest α gap |",
             "|---|" + "---|" * (len(names) + 1)]
    for r in rows:
        cells = " | ".join(f"{r['finals'][n]:.4f}" if n in r["finals"] else "-" for n in names)
        lines.append(f"| {r['seed']} | {cells} | {r['tracking_error']:.1e} |")
    summary = []
    for n in names:
        s = spread([r["finals"][n] for r in rows if n in r["finals"]])
        summary.append(f"{s['mean']:.4f} ±{s['range'] / 2:.4f} (sd {s['sd']:.4f})" if s["n"] >= 2 else "-")
    lines.append(f"| mean ± half-range | {' | '.join(summary)} | |")
    write_atomic(args.out / f"fixed_alpha_{tag}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
