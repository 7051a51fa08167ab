"""The step benchmark: time and peak memory of ONE optimizer step, ScheduleFree+ against AdamW and SF-AdamW.

Why it is built this way:

* **GPT-like shapes.** An optimizer step's cost depends on the number and shapes of tensors (foreach
  kernels amortise launches over a list; a for-loop pays per tensor), so the parameters are the
  tensors of a nanoGPT-style model (tied embedding, positions, per layer two norms, the fused qkv,
  attention output and MLP matrices, a final norm), not one flat vector.
* **One process, interleaved, medians.** This machine is shared; load comes and goes. Timing every
  method in the same loop, rotating the order each round, exposes all methods to the same noise, and
  the median ignores the spikes. Ratios (to fused AdamW and to ``schedulefree.AdamWScheduleFree``) are
  what carries over between machines, not milliseconds.
* **Shared parameters and gradients.** All optimizers step the same tensors with the same fixed
  gradient, so memory holds one copy of parameters and gradients plus each optimizer's state. The
  values drift a little; the cost of a step does not depend on them. ScheduleFree+ is checked to
  have taken every step (a skipped step would be cheap and flatter it).
* **Peak memory** is the transient memory a step allocates beyond the persistent state: on CUDA from
  the caching allocator's peak, on CPU from ``torch.profiler`` allocation events (the CPU allocator
  has no peak counter). Persistent state is counted from ``optimizer.state`` directly.

Run it as ``python benchmarks/optimizer_step.py`` or ``python -m sfplus_lab.bench.step``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_atomic
from ..flags import add_field_arguments
from ..optim_factory import needs_loss, step
from .meta import run_meta
from .step_math import SHAPES, add_ratios, check_targets, format_table, gpt_param_shapes, quantile

__all__ = ["METHODS", "StepBenchConfig", "bench_size", "run_step_benchmark", "main"]


@dataclass(frozen=True, slots=True)
class Method:
    """One optimizer under test: how to build it and its state buffers per parameter. Stepped by
    ``sfplus_lab.optim_factory.step``, which gives ScheduleFree+ the loss."""

    name: str
    build: Callable[[list[torch.Tensor]], torch.optim.Optimizer]
    state_buffers: int  # parameter-sized state tensors, for the memory plan before building


def _sfplus(**flags: bool) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    def build(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        from sfplus import ScheduleFreePlus

        # λ = 20 (the paper's range) so the AdamC decay term is part of the timed step.
        return ScheduleFreePlus(params, weight_decay=20.0, **flags)

    return build


def _reference(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    from sfplus import ScheduleFreePlusReference

    return ScheduleFreePlusReference(params, weight_decay=20.0)


def _adamw(**kwargs: Any) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    def build(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, **kwargs)

    return build


def _sf_adamw(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    import schedulefree

    opt = schedulefree.AdamWScheduleFree(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    opt.train()
    return opt


#: In priority order: when memory is short, methods are dropped from the end.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("adamw-fused", _adamw(fused=True), 2),
        Method("sf-adamw", _sf_adamw, 2),
        Method("sfplus-default", _sfplus(), 3),  # no flags: the path a user gets
        Method("sfplus-foreach", _sfplus(foreach=True), 3),
        Method("adamw-foreach", _adamw(foreach=True), 2),
        Method("sfplus-fused", _sfplus(fused=True), 3),  # torch.compile'd update
        Method("sfplus-forloop", _sfplus(foreach=False), 3),
        Method("sfplus-reference", _reference, 5),
    )
}


@dataclass(kw_only=True, slots=True)
class StepBenchConfig:
    """What to measure. Saved into the results file."""

    sizes: Sequence[str] = ("1m", "15m", "100m")
    """Named parameter sets from ``SHAPES``."""
    methods: Sequence[str] = tuple(METHODS)
    """Optimizers from ``METHODS``, compared in one process."""
    device: str = "cpu"
    """``cpu`` or ``cuda``."""
    repeats: int = 15
    """Timed steps per method (per size), interleaved across methods."""
    warmup: int = 3
    """Untimed steps per method first (lazy state, allocator, kernel caches)."""
    threads: int = 1
    """``torch.set_num_threads`` on CPU (this shared machine: 1)."""
    max_gb: float = 6.0
    """Memory budget; methods that would not fit are skipped (and listed as skipped)."""
    seed: int = 0
    """Seed of the random parameters and gradients."""
    measure_memory: bool = True
    """Measure each step's transient peak memory (one extra profiled step per method)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [s for s in self.sizes if s not in SHAPES]
        if unknown:
            raise ValueError(f"unknown size(s) {unknown}; choose from {sorted(SHAPES)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if self.repeats < 1 or self.warmup < 0 or self.threads < 1:
            raise ValueError(f"repeats >= 1, warmup >= 0, threads >= 1 (got {self.repeats}, {self.warmup}, "
                             f"{self.threads})")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_params(shapes: list[tuple[int, ...]], device: torch.device, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = (torch.randn(shape, generator=gen) * 0.02).to(device).requires_grad_(True)
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(device)
        params.append(p)
    return params


#: The loss handed to ScheduleFree+: a typical LM loss; F only enters a scalar, not the tensor work.
_LOSS = 3.0


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    seen: set[int] = set()
    total = 0
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.numel() > 1 and id(value) not in seen:
                seen.add(id(value))
                total += value.numel() * value.element_size()
    return total


def _transient_peak_bytes(opt: torch.optim.Optimizer, device: torch.device) -> int:
    """Bytes a step allocates at its peak beyond what was allocated before it."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(opt, _LOSS)
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(opt, _LOSS)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return int(peak)


def _plan(cfg: StepBenchConfig, num_params: int) -> tuple[list[Method], list[dict[str, Any]]]:
    """Methods that fit ``max_gb`` (params + grads + each state + 2 transient copies), in priority order."""
    budget = cfg.max_gb * 2**30
    per = 4 * num_params  # fp32 bytes per parameter-sized tensor
    used = per * (2 + 2)  # shared params and grads, and room for a step's temporaries
    chosen, skipped = [], []
    for name in METHODS:
        if name not in cfg.methods:
            continue
        method = METHODS[name]
        need = per * method.state_buffers
        if used + need > budget:
            skipped.append({"method": name, "reason": f"needs {need / 2**30:.2f} GiB more than max_gb={cfg.max_gb}"})
            continue
        used += need
        chosen.append(method)
    return chosen, skipped


def bench_size(cfg: StepBenchConfig, size: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Time every method at one size; rows of results and of skipped methods."""
    device = torch.device(cfg.device)
    shapes = gpt_param_shapes(SHAPES[size])
    num_params = sum(math.prod(s) for s in shapes)
    methods, skipped = _plan(cfg, num_params)
    for row in skipped:
        row["size"] = size
    params = _make_params(shapes, device, cfg.seed)
    opts = {m.name: m.build(params) for m in methods}
    for _ in range(cfg.warmup):
        for m in methods:
            step(opts[m.name], _LOSS)
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    for r in range(cfg.repeats):
        order = methods[r % len(methods):] + methods[: r % len(methods)]  # rotate: no fixed position
        for m in order:
            _sync(device)
            t0 = time.perf_counter()
            step(opts[m.name], _LOSS)
            _sync(device)
            times[m.name].append(time.perf_counter() - t0)
    rows = []
    for m in methods:
        opt = opts[m.name]
        ts = times[m.name]
        row = {
            "size": size,
            "num_params": num_params,
            "num_tensors": len(shapes),
            "method": m.name,
            "median_ms": statistics.median(ts) * 1e3,
            "p25_ms": quantile(ts, 0.25) * 1e3,
            "p75_ms": quantile(ts, 0.75) * 1e3,
            "min_ms": min(ts) * 1e3,
            "repeats": len(ts),
            "state_bytes": _state_bytes(opt),
            "state_per_param": _state_bytes(opt) / (4 * num_params),
        }
        if cfg.measure_memory:
            row["transient_peak_bytes"] = _transient_peak_bytes(opt, device)
        if needs_loss(opt):
            row["skipped_steps"] = int(opt.stats.get("num_skipped", 0))
            if row["skipped_steps"]:
                raise RuntimeError(f"{m.name} skipped {row['skipped_steps']} steps at {size}: its timing is invalid")
        rows.append(row)
    add_ratios(rows)
    del opts, params
    return rows, skipped


def run_step_benchmark(cfg: StepBenchConfig) -> dict[str, Any]:
    """Run every size; return the results document (meta, config, rows, skipped, targets)."""
    if cfg.device == "cpu":
        torch.set_num_threads(cfg.threads)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for size in cfg.sizes:
        size_rows, size_skipped = bench_size(cfg, size)
        rows += size_rows
        skipped += size_skipped
    config = asdict(cfg)
    config["sizes"], config["methods"] = list(cfg.sizes), list(cfg.methods)
    config["shapes"] = {s: asdict(SHAPES[s]) for s in cfg.sizes}
    return {
        "benchmark": "optimizer_step",
        "schema": 1,
        "meta": run_meta(cfg.device),
        "config": config,
        "results": rows,
        "skipped": skipped,
        "targets": check_targets(rows),
    }


#: The ``StepBenchConfig`` fields that have a flag of the same name; their help is the field's docstring.
_FIELD_FLAGS = ("sizes", "methods", "repeats", "warmup", "threads", "max_gb", "seed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time one optimizer step: ScheduleFree+ vs AdamW and SF-AdamW.")
    add_field_arguments(parser, StepBenchConfig, _FIELD_FLAGS, defaults=StepBenchConfig(),
                        options={"sizes": {"choices": sorted(SHAPES)}, "methods": {"choices": list(METHODS)}})
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--no-memory", action="store_true", help="skip the profiled peak-memory step")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = {name: getattr(args, name) for name in _FIELD_FLAGS if getattr(args, name) is not None}
    try:
        cfg = StepBenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()},
                              device=args.device, measure_memory=not args.no_memory)
    except ValueError as exc:
        print(f"optimizer_step: error: {exc}")
        return 2
    doc = run_step_benchmark(cfg)
    print(format_table(doc))
    for t in doc["targets"]:
        print(f"target {t['size']}: {t['method']} / {t['vs']} = {t['ratio']:.2f} (limit {t['limit']}): "
              f"{'met' if t['met'] else 'NOT met'}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
