"""One benchmark job: the lab's training step and evaluation (``sfplus_lab.loop``) over its model, optimizers and data.

No checkpoints and no logging framework: a job trains, evaluates at fixed token counts and returns a
JSON-able record. Three kinds of job reuse work the way each method allows:

* ``decay`` (AdamW cosine / linear decay): one run per budget, since the schedule needs the horizon.
* ``wsd`` (AdamW warmup-stable-decay): ONE stable run; at ``T_B - 0.2 T_B`` for each budget B the model
  and optimizer are copied and a cooldown branch runs to ``T_B`` with transformers' WSD schedule for
  ``T_B`` (fast-forwarded to the branch point). The stable phases of all budgets' schedules are the
  same, so a branch equals a direct WSD run of that length (``tests/bench`` checks this bit for bit).
* ``anytime`` (ScheduleFree+, Schedule-Free AdamW): one run; the value at budget B is the evaluation
  at ``T_B`` (at x, the average). Nothing about the run depends on B.

Batches come from ``get_batch(seed, step)``: every run with the same seed sees the same data in the same
order, so methods differ only in the optimizer (common random numbers).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from .. import loop
from ..data import eval_batches, get_batch, load_corpus
from ..model import GPT, ModelConfig
from ..optim_factory import METHODS, OptimConfig, at_x, build_optimizer, needs_loss
from .config import BenchConfig, model_config

__all__ = ["Job", "run_job", "load_bench_corpus", "eval_steps_for", "steps_for_budget"]

#: At most this many points of the per-step traces (train loss, alpha or lr) are kept per run.
_TRACE_POINTS = 500


@dataclass(kw_only=True, slots=True)
class Job:
    """One training run (with branches for WSD). JSON-able; ``id`` names its result file."""

    size: str
    method: str
    lr: float | None  # None for ScheduleFree+ (its fixed default config)
    k: int | None  # grid exponent of lr
    seed: int
    kind: str  # decay | wsd | anytime
    budgets: list[float]  # budgets (tokens/param) this job yields a final value for
    horizon_tpp: float  # how far the run goes, in tokens per parameter
    phase: str  # short | long | seed | sfplus
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        lr = "default" if self.lr is None else f"lr{self.lr:.4g}"
        budgets = "-".join(f"{b:g}" for b in self.budgets)
        return f"{self.size}_{self.method}_{lr}_s{self.seed}_{self.kind}_b{budgets}_h{self.horizon_tpp:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "method": self.method, "lr": self.lr, "k": self.k,
                "seed": self.seed, "kind": self.kind, "budgets": list(self.budgets),
                "horizon_tpp": self.horizon_tpp, "phase": self.phase}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Job:
        return Job(size=d["size"], method=d["method"], lr=d["lr"], k=d["k"], seed=d["seed"], kind=d["kind"],
                   budgets=list(d["budgets"]), horizon_tpp=d["horizon_tpp"], phase=d["phase"])


@lru_cache(maxsize=2)
def load_bench_corpus(data: tuple[str, ...] | None, tokenizer: str) -> Any:
    """The corpus, loaded once per process (``load_corpus`` caches tokens on disk across processes)."""
    return load_corpus(list(data) if data is not None else None, tokenizer=tokenizer)


def steps_for_budget(tpp: float, num_params: int, tokens_per_step: int) -> int:
    """Optimizer steps for ``tpp`` tokens per parameter (at least 1)."""
    return max(1, round(tpp * num_params / tokens_per_step))


def eval_steps_for(cfg: BenchConfig, num_params: int, horizon_steps: int, extra: list[int],
                   per_decade: int | None = None) -> list[int]:
    """Log-spaced evaluation steps from ``first_eval_tpp`` to the horizon, plus ``extra`` (budget ends)."""
    per_decade = cfg.evals_per_decade if per_decade is None else per_decade
    first = steps_for_budget(cfg.first_eval_tpp, num_params, cfg.tokens_per_step)
    points = {horizon_steps, *[s for s in extra if 0 < s <= horizon_steps]}
    if horizon_steps > first and per_decade > 0:
        n = max(2, math.ceil(per_decade * math.log10(horizon_steps / first)) + 1)
        points.update(int(round(v)) for v in np.geomspace(first, horizon_steps, n))
    return sorted(p for p in points if p >= 1)


@lru_cache(maxsize=4)
def _eval_windows(data: tuple[str, ...] | None, tokenizer: str, seq_len: int, batch_size: int,
                  eval_tokens: int) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    corpus = load_bench_corpus(data, tokenizer)
    max_batches = max(1, eval_tokens // (batch_size * seq_len))
    out = {}
    for name, tokens in corpus.val.items():
        if len(tokens) > seq_len:
            out[name] = list(eval_batches(tokens, batch_size, seq_len, max_batches=max_batches))
    return out


def evaluate(model: GPT, opt: torch.optim.Optimizer, windows: dict[str, list], device: torch.device) -> dict:
    """Validation loss per source and pooled (token-weighted), at x for the schedule-free methods.

    ``loop.evaluate`` inside ``at_x``: the training point y is put back exactly afterwards, so a run's
    numbers do not depend on its evaluation schedule.
    """
    with at_x(model, opt):
        return loop.evaluate(model, windows, device)


class _Trace:
    """Per-step scalars, decimated to at most ``_TRACE_POINTS`` entries (the whole run is not needed)."""

    def __init__(self, total_steps: int) -> None:
        self.every = max(1, total_steps // _TRACE_POINTS)
        self.rows: dict[str, list[float]] = {"step": [], "train_loss": [], "alpha": [], "lr": []}

    def add(self, step: int, loss: float, opt: torch.optim.Optimizer) -> None:
        if step % self.every and step != 1:
            return
        self.rows["step"].append(step)
        self.rows["train_loss"].append(loss)
        group = opt.param_groups[0]
        if needs_loss(opt):
            self.rows["alpha"].append(float(opt.stats.get("alpha", math.nan)))
        # schedulefree keeps its warmed-up lr in "scheduled_lr"; torch schedulers write "lr"
        self.rows["lr"].append(float(group.get("scheduled_lr", group["lr"])))


@dataclass(slots=True)
class _Run:
    """A model being trained: everything a segment of the loop touches."""

    model: GPT
    opt: torch.optim.Optimizer
    sched: Any
    step: int = 0
    diverged: bool = False
    curve: list[dict[str, Any]] = field(default_factory=list)


def _train_until(run: _Run, end: int, *, cfg: BenchConfig, job: Job, train_tokens: np.ndarray, windows: dict,
                 eval_at: set[int], trace: _Trace, num_params: int, device: torch.device) -> None:
    """Steps ``run.step`` -> ``end``, evaluating after every step in ``eval_at``."""
    while run.step < end and not run.diverged:
        x, y = get_batch(train_tokens, batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=job.seed, step=run.step)
        loss, stepped = loop.train_step(run.model, run.model, run.opt, run.sched, x.to(device), y.to(device),
                                        skip=_nonfinite)
        if not stepped:
            run.diverged = True  # a baseline LR too high: recorded, not hidden
            break
        run.step += 1
        trace.add(run.step, float(loss.detach()), run.opt)
        if run.step in eval_at:
            _evaluate_into(run, cfg, windows, num_params, device)


def _nonfinite(loss: torch.Tensor) -> bool:
    return not math.isfinite(float(loss.detach()))


def _evaluate_into(run: _Run, cfg: BenchConfig, windows: dict, num_params: int, device: torch.device) -> None:
    ev = evaluate(run.model, run.opt, windows, device)
    tokens = run.step * cfg.tokens_per_step
    run.curve.append({"step": run.step, "tokens": tokens, "tpp": tokens / num_params, **ev})
    if not math.isfinite(ev["pooled"]):
        run.diverged = True


def _optim_config(job: Job) -> OptimConfig:
    """The job's method from the registry, at the job's learning rate (None for a fixed configuration)."""
    return METHODS[job.method].optim_config(lr=job.lr)


def _build(job: Job, mcfg: ModelConfig, total_steps: int, device: torch.device) -> _Run:
    torch.manual_seed(job.seed)
    model = GPT(mcfg).to(device)
    opt, sched = build_optimizer(_optim_config(job), model, total_steps)
    return _Run(model=model, opt=opt, sched=sched)


def _branch(parent: _Run, job: Job, mcfg: ModelConfig, total_steps: int, device: torch.device) -> _Run:
    """A WSD cooldown branch: a copy of the stable run with the schedule for ``total_steps``, at the same step."""
    model = GPT(mcfg).to(device)
    model.load_state_dict(parent.model.state_dict())
    opt, sched = build_optimizer(_optim_config(job), model, total_steps)
    opt.load_state_dict(copy.deepcopy(parent.opt.state_dict()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": a deliberate fast-forward
        for _ in range(parent.step):
            sched.step()
    return _Run(model=model, opt=opt, sched=sched, step=parent.step)


def _final(run: _Run, step: int) -> dict[str, Any]:
    for point in run.curve:
        if point["step"] == step:
            return {"step": step, "diverged": False, "pooled": point["pooled"], "per_source": point["per_source"]}
    return {"step": step, "diverged": True, "pooled": math.nan, "per_source": {}}


def run_job(job: Job, cfg: BenchConfig) -> dict[str, Any]:
    """Train one job and return its record: finals per budget, eval curves, traces, throughput."""
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    corpus = load_bench_corpus(cfg.data, cfg.tokenizer)
    windows = _eval_windows(cfg.data, cfg.tokenizer, cfg.seq_len, cfg.batch_size, cfg.eval_tokens)
    mcfg = model_config(job.size, corpus.vocab_size, cfg.seq_len)
    num_params = GPT(mcfg).num_params()
    steps = {b: steps_for_budget(b, num_params, cfg.tokens_per_step) for b in job.budgets}
    horizon = steps_for_budget(job.horizon_tpp, num_params, cfg.tokens_per_step)
    kw = dict(cfg=cfg, job=job, train_tokens=corpus.train, windows=windows, num_params=num_params, device=device)
    trace = _Trace(horizon)
    start = time.perf_counter()
    finals: dict[str, Any] = {}
    branches: dict[str, list[dict[str, Any]]] = {}
    trained_steps = 0
    if job.kind == "wsd":
        cooldown_start = {b: s - _wsd_decay_steps(s, cfg, job) for b, s in steps.items()}
        run = _build(job, mcfg, horizon, device)
        eval_at = set(eval_steps_for(cfg, num_params, horizon, [*steps.values(), *cooldown_start.values()],
                                     _evals_per_decade(cfg, job)))
        snapshots: dict[float, _Run] = {}
        for b in sorted(job.budgets):
            _train_until(run, cooldown_start[b], eval_at=eval_at, trace=trace, **kw)
            if steps[b] != horizon and not run.diverged:
                snapshots[b] = _branch(run, job, mcfg, steps[b], device)
        _train_until(run, horizon, eval_at=eval_at, trace=trace, **kw)
        trained_steps += run.step
        finals[f"{max(job.budgets):g}"] = _final(run, horizon)
        for b, branch in snapshots.items():
            before = len(branch.curve)
            branch_evals = {s for s in eval_at if branch.step < s <= steps[b]} | {steps[b]}
            _train_until(branch, steps[b], eval_at=branch_evals, trace=_Trace(steps[b]), **kw)
            if not branch.diverged and not any(p["step"] == steps[b] for p in branch.curve):
                _evaluate_into(branch, cfg, windows, num_params, device)  # no cooldown (warmup filled the run)
            trained_steps += branch.step - cooldown_start[b]
            branches[f"{b:g}"] = branch.curve[before:]
            finals[f"{b:g}"] = _final(branch, steps[b])
        for b in job.budgets:
            finals.setdefault(f"{b:g}", {"step": steps[b], "diverged": True, "pooled": math.nan, "per_source": {}})
    else:
        run = _build(job, mcfg, horizon, device)
        per_decade = _evals_per_decade(cfg, job)
        eval_at = set(eval_steps_for(cfg, num_params, horizon, list(steps.values()), per_decade))
        _train_until(run, horizon, eval_at=eval_at, trace=trace, **kw)
        trained_steps += run.step
        for b, s in steps.items():
            finals[f"{b:g}"] = _final(run, s)
    wall = time.perf_counter() - start
    record = {
        "job": job.to_dict(),
        "num_params": num_params,
        "model": mcfg.to_dict(),
        "optim": _optim_config(job).resolved().to_dict(),
        "steps": {f"{b:g}": s for b, s in steps.items()},
        "horizon_steps": horizon,
        "diverged": run.diverged,
        "finals": finals,
        "curve": run.curve,
        "branches": branches,
        "trace": {k: v for k, v in trace.rows.items() if v},
        "wall_s": wall,
        "trained_steps": trained_steps,
        "tok_per_s": trained_steps * cfg.tokens_per_step / max(wall, 1e-9),
    }
    if needs_loss(run.opt):
        record["num_skipped"] = int(run.opt.stats.get("num_skipped", 0))
    return record


def _evals_per_decade(cfg: BenchConfig, job: Job) -> int:
    """Dense for ScheduleFree+ (time-to-target reads its curve), sparse for a baseline's long runs (the
    anytime figure), none between budget ends for short sweeps (only their final values are used)."""
    if not METHODS[job.method].tuned:
        return cfg.evals_per_decade
    return cfg.baseline_evals_per_decade if max(job.budgets) >= cfg.long_budget else 0


def _wsd_decay_steps(total: int, cfg: BenchConfig, job: Job) -> int:
    """Cooldown length of a WSD run of ``total`` steps, as the lab's schedule computes it (20% of the run)."""
    ocfg = _optim_config(job).resolved()
    warmup = min(ocfg.warmup_steps, total)
    return min(round(ocfg.cooldown_frac * total), total - warmup)
