"""Why a ScheduleFree+ step costs about 1.8x a fused AdamW step on a CPU: count the tensors each pass reads.

    python benchmarks/step_floor.py --size 15m --repeats 20   # one thread, as optimizer_step.py

On a memory-bound CPU step the cost of an elementwise pass is set by how many parameter-sized tensors
it *reads*; writing back a tensor the pass has just read is nearly free (the cache line is already
there). This script times, on GPT-shaped tensors (``sfplus_lab.bench.step_math.SHAPES``), the passes that
make up each optimizer step next to reference passes, and prints each in units of "one read of every
tensor" (a compiled elementwise scale-in-place, 1 read + 1 in-place write):

* fused AdamW: reads p, g, m, v (4), writes p, m, v in place;
* ScheduleFree+ statistics, <g, d> = <g, z - y> and ||g||_1: reads g, d (2), writes nothing;
* ScheduleFree+ update: reads y, d, m, v, g (5), writes y, d, m, v in place.

The statistics must be complete (summed over every tensor, and over ranks) before any tensor can be
updated, because the step size depends on them; so with d = z - y, m, v as state (state format 2) a
ScheduleFree+ step reads 7 tensors to AdamW's 4 (it read 8 with z, m, v: the statistics read g, z, y),
and its kernels alone cost about 1.75x. Medians of interleaved rounds in one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from sfplus import functional as F
from sfplus_lab.bench.step_math import SHAPES, gpt_param_shapes


def _passes(size: str) -> dict[str, tuple[int, object]]:
    """name -> (tensors read, a zero-argument callable running the pass once)."""
    shapes = gpt_param_shapes(SHAPES[size])
    gen = torch.Generator().manual_seed(0)

    def tensors(positive: bool = False) -> list[torch.Tensor]:
        out = [torch.randn(s, generator=gen) for s in shapes]
        return [t.abs_() for t in out] if positive else out

    y, d, m, g, unit = tensors(), tensors(), tensors(), tensors(), tensors()
    v = tensors(positive=True)
    params = [torch.nn.Parameter(t) for t in tensors()]
    for p, grad in zip(params, tensors()):
        p.grad = grad
    adam = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, fused=True)
    # the step's scalars (one row of functional.COEF_ORDER for every tensor, read by functional._fused_rows_math);
    # values do not change the reads
    scalars = torch.full((1, len(F.COEF_ORDER)), 0.5)
    rows = (0,) * len(shapes)
    ok = torch.tensor(True)

    def scale(xs: list[torch.Tensor]) -> None:
        for x in xs:
            x.mul_(-1.0)  # a sign flip: exact however often it runs (a multiply by 1.0 is compiled away)

    stats = torch.compile(F._fused_stats_math, dynamic=False)
    update = torch.compile(F._fused_rows_math, dynamic=False)
    scale_c = torch.compile(scale, dynamic=False)
    return {
        "one read (scale in place)": (1, lambda: scale_c(unit)),
        "AdamW fused step": (4, adam.step),
        "ScheduleFree+ statistics pass": (2, lambda: stats(d, g, F._stats_accumulation(d[0]))),
        "ScheduleFree+ update pass": (5, lambda: update(y, d, m, v, g, scalars, rows, ok, 0.1, 0.05)),
    }


def _time_passes(size: str, repeats: int) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Each pass's tensor reads, and its times over ``repeats`` rounds (after two untimed runs), the order
    rotated every round."""
    passes = _passes(size)
    for _, fn in passes.values():  # compile and warm up
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in passes}
    names = list(passes)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order every round
            t0 = time.perf_counter()
            passes[name][1]()
            times[name].append(time.perf_counter() - t0)
    return {name: reads for name, (reads, _) in passes.items()}, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="15m", choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (1, as optimizer_step.py: on a shared machine more threads "
                             "wait on each other)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:  # the caller's thread count and grad mode come back (the slow test calls main() inside pytest)
        with torch.no_grad():
            reads_of, times = _time_passes(args.size, args.repeats)
    finally:
        torch.set_num_threads(threads)
    names = list(times)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    unit = med["one read (scale in place)"]
    print(f"size {args.size}, torch {torch.__version__}, {args.threads} threads, {args.repeats} rounds")
    print(f"{'pass':32s} {'reads':>5s} {'median ms':>10s} {'in reads':>9s} {'ms per read':>12s}")
    for name in names:
        reads = reads_of[name]
        print(f"{name:32s} {reads:5d} {med[name] * 1e3:10.2f} {med[name] / unit:9.2f} {med[name] * 1e3 / reads:12.2f}")
    kernels = med["ScheduleFree+ statistics pass"] + med["ScheduleFree+ update pass"]
    print(f"ScheduleFree+ passes / AdamW fused step: {kernels / med['AdamW fused step']:.2f}x "
          "(before any per-step overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
