"""The training loop: batches as a function of (seed, step), evaluation and checkpoints at x, exact resume.

Why resume is exact: the batch of step s is ``get_batch(seed=seed, step=s, ...)``, a pure function, so the
data position is just ``step``; the model has no dropout, so the loop draws no other randomness; and a
checkpoint holds the parameters at x (``model.pt``), the optimizer's full state and the training-mode
parameters y. A schedule-free optimizer rebuilds y from x and z when it leaves eval mode, which is exact
only up to rounding; so every step boundary that evaluates or saves snapshots y first and puts it back
after ``train()``. Boundaries then leave the training path untouched (evaluating more or less often does
not change it), and a resumed run restores the same y, so it continues bit for bit (on CPU, fp32).

Data-parallel runs: ``rank`` and ``world_size`` go to ``get_batch`` and ``eval_batches``; only rank 0
writes files; evaluation sums are reduced across ranks by ``distributed.all_reduce_sums`` (one collective).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt_io
from . import distributed as dist_lab
from . import loop
from .config import RunConfig
from .errors import UserError
from .metrics import MetricsLog
from .model import GPT, forward_context, maybe_compile
from .optim_factory import at_x as params_at_x
from .optim_factory import build_optimizer, needs_loss, optimizer_scalars, set_train_mode

__all__ = ["RunResult", "Trainer", "log_spaced_steps", "pick_device", "total_steps_for"]

STATE_FORMAT = 1
PLOT_INTERVAL_S = 10.0


@dataclass(slots=True)
class RunResult:
    """What a finished (or stopped) run reports."""

    step: int
    total_steps: int
    stopped_early: bool
    final_eval: dict[str, Any] | None
    run_dir: Path
    stop_signal: int | None = None
    """The signal that stopped the run early (SIGINT or SIGTERM; None when it ran to the end or was stopped
    without one, e.g. by another data-parallel rank)."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for, but torch sees no CUDA GPU")
    return torch.device(name)


def log_spaced_steps(first: int, last: int, per_decade: int) -> set[int]:
    """The steps in [first, last] nearest to ``per_decade`` log-spaced points per decade (none if per_decade = 0).

    Rounded to whole steps, so the set is denser in evaluations per decade than asked only where it cannot be.
    """
    if per_decade <= 0 or last < first or first < 1:
        return set()
    steps, i = set(), math.ceil(per_decade * math.log10(first) - 1e-9)
    while (step := round(10 ** (i / per_decade))) <= last:
        if step >= first:
            steps.add(step)
        i += 1
    return steps


def total_steps_for(cfg: RunConfig, num_params: int, world_size: int = 1) -> int:
    """Optimizer steps that cover the token budget (rounded up, at least 1)."""
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * world_size
    tokens = cfg.train.tokens if cfg.train.tokens is not None else cfg.train.tokens_per_param * num_params
    return max(1, math.ceil(tokens / tokens_per_step))


class Trainer:
    """One run: model, optimizer, data and run folder. ``run()`` trains until the budget or a SIGTERM."""

    def __init__(
        self, cfg: RunConfig, corpus: Any, run_dir: Path, *, rank: int = 0, world_size: int = 1,
        dist_ctx: dist_lab.DistContext | None = None,
    ) -> None:
        from .data import get_batch  # imported here so the lab's other modules work without the data layer

        self._get_batch = get_batch
        self.cfg = cfg.resolve_model(corpus.vocab_size)
        self.corpus = corpus
        self.run_dir = run_dir
        # Under torchrun (sfplus_lab.distributed.init) the context says the rank, world and this rank's device.
        self.dist = dist_ctx if dist_ctx is not None else dist_lab.DistContext(rank=rank, world_size=world_size)
        rank, world_size = self.dist.rank, self.dist.world_size
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.device = torch.device(self.dist.device) if self.dist.is_distributed else pick_device(self.cfg.train.device)
        torch.manual_seed(self.cfg.train.seed)  # the initialisation; batches have their own seeded stream
        self.model = GPT(self.cfg.model).to(self.device)
        # DDP when distributed (gradients averaged; the optimizer still gets self.model's tensors).
        self.forward = maybe_compile(dist_lab.wrap_model(self.model, self.dist), self.cfg.train.compile)
        self.tokens_per_step = self.cfg.data.batch_size * self.cfg.data.seq_len * world_size
        self.total_steps = total_steps_for(self.cfg, self.model.num_params(), world_size)
        self.optimizer, self.scheduler = build_optimizer(self.cfg.optim, self.model, self.total_steps)
        from .data import evaluable_sources

        self.val_sources = evaluable_sources(self.corpus, self.cfg.data.seq_len)
        self.step = 0
        self.consecutive_skips = 0
        self.num_skipped = 0
        self.stop_requested = False
        self.stop_signal: int | None = None
        self.elapsed_s = 0.0
        self.last_eval: dict[str, Any] | None = None
        self.saved_step = -1
        self.log_eval_steps = log_spaced_steps(self.cfg.train.eval_every, self.total_steps,
                                               self.cfg.train.evals_per_decade)
        self._plotted_at = -math.inf
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=self.is_main)

    # ------------------------------------------------------------------ setup and resume
    def resume_from(self, checkpoint_dir: Path) -> ckpt_io.Checkpoint | None:
        """Load the newest valid checkpoint (None when there is none): model at x, optimizer, schedule, counters."""
        ckpt = ckpt_io.latest_valid(checkpoint_dir)
        if ckpt is None:
            return None
        state = ckpt_io.load(ckpt, map_location=self.device)
        saved_model = state["config"].get("model") or {}
        mine = self.cfg.model.to_dict()
        if saved_model != mine:
            diffs = [f"{k}: {saved_model.get(k)!r} -> {mine[k]!r}" for k in mine if saved_model.get(k) != mine[k]]
            raise UserError(f"cannot resume from {ckpt.path}: incompatible model config ({'; '.join(diffs)})")
        train_state = state["train_state"]
        if train_state.get("format") != STATE_FORMAT:
            raise UserError(f"cannot resume from {ckpt.path}: unknown checkpoint format {train_state.get('format')!r}")
        self.model.load_state_dict(state["model"])  # parameters now hold x
        self.optimizer.load_state_dict(train_state["optimizer"])  # its mode says eval: the params hold x
        if self.scheduler is not None:
            self.scheduler.load_state_dict(train_state["scheduler"])
        torch.set_rng_state(train_state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and train_state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all([s.cpu() for s in train_state["rng"]["cuda"]])
        saved_step, saved_tokens = int(train_state["step"]), int(train_state["tokens"])
        if saved_step and saved_tokens != saved_step * self.tokens_per_step:
            raise UserError(
                f"cannot resume from {ckpt.path}: it was trained with {saved_tokens // saved_step:,} tokens per step, "
                f"this run takes {self.tokens_per_step:,} (batch size x seq len x processes); use the same number "
                "of processes"
            )
        self.step = int(train_state["step"])
        self.consecutive_skips = int(train_state["consecutive_skips"])
        self.num_skipped = int(train_state["num_skipped"])
        self.elapsed_s = float(train_state["elapsed_s"])
        set_train_mode(self.optimizer, True)
        self._restore_params(train_state["y_params"])  # the exact y, not the one rebuilt from x and z
        return ckpt

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, Any]:
        """Forward and backward at y, then the optimizer step (``loop.train_step``); returns the train row's values."""
        data, train = self.cfg.data, self.corpus.train
        x, y = self._get_batch(
            train, batch_size=data.batch_size, seq_len=data.seq_len, seed=self.cfg.train.seed,
            step=self.step, rank=self.rank, world_size=self.world_size,
        )
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        loss, stepped = loop.train_step(
            self.forward, self.model, self.optimizer, self.scheduler, x, y,
            grad_clip=self.cfg.optim.grad_clip, context=lambda: forward_context(self.device),
            skip=self._baseline_nonfinite,
        )
        if not stepped:
            return self._skip(float(loss.detach()))
        scalars = optimizer_scalars(self.optimizer)
        if scalars.get("status") == "skipped_nonfinite":
            self.num_skipped += 1
            self.consecutive_skips += 1
        else:
            self.consecutive_skips = 0
        return {"loss": float(loss.detach()), **scalars}

    def _baseline_nonfinite(self, loss: torch.Tensor) -> bool:
        """A non-finite loss (on any rank) skips a baseline's step; ScheduleFree+ is given it and skips itself."""
        return not needs_loss(self.optimizer) and dist_lab.any_rank(not torch.isfinite(loss), self.dist)

    def _skip(self, loss: float) -> dict[str, Any]:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()  # keep the schedule aligned with the step count, as a skipped step still counts
        self.num_skipped += 1
        self.consecutive_skips += 1
        return {"loss": loss, "skipped": True, "status": "skipped_nonfinite", **optimizer_scalars(self.optimizer)}

    # ------------------------------------------------------------------ evaluation at x
    def evaluate(self) -> dict[str, Any] | None:
        """Validation loss per source and pooled (token-weighted), with the parameters holding x (``loop.evaluate``).

        Returns None when a stop was requested mid-evaluation (the pass is abandoned, the run saves and exits).
        """
        from .data import eval_batches

        data = self.cfg.data
        windows = {
            name: eval_batches(tokens, data.batch_size, data.seq_len, self.cfg.train.eval_batches,
                               rank=self.rank, world_size=self.world_size)
            for name, tokens in self.val_sources.items()
        }
        result = loop.evaluate(
            self.forward, windows, self.device, context=lambda: forward_context(self.device),
            reduce=lambda sums: dist_lab.all_reduce_sums(sums, self.dist),
            # ranks must finish the pass together: each holds part of the sums
            stop=lambda: self.stop_requested and not self.dist.is_distributed,
        )
        if result is None:
            return None
        row: dict[str, Any] = {"kind": "eval", "step": self.step, "tokens": self.step * self.tokens_per_step}
        row["val_loss"] = result["pooled"]
        row.update({f"val_loss/{name}": value for name, value in result["per_source"].items()})
        return row

    # ------------------------------------------------------------------ step boundaries
    @torch.no_grad()
    def _restore_params(self, y_params: dict[str, torch.Tensor]) -> None:
        for name, p in self.model.named_parameters():
            p.copy_(y_params[name])

    def at_x(self, *, evaluate: bool, save: bool) -> None:
        """Evaluate and/or save with the parameters at x, then return to exactly the y of before."""
        with params_at_x(self.model, self.optimizer) as y_params:
            if evaluate:
                row = self.evaluate()
                if row is not None:
                    self.last_eval = row
                    self.metrics.write(row)
                    self.refresh_plots(force=False)
            if save:
                self.save_checkpoint(y_params)

    def save_checkpoint(self, y_params: dict[str, torch.Tensor]) -> None:
        """Write a checkpoint of the current step (rank 0), with the parameters at x and y given separately."""
        if not self.is_main:
            return
        self.metrics.sync()  # the log is durable up to this step before the checkpoint claims it
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        train_state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "tokens": self.step * self.tokens_per_step,
            "total_steps": self.total_steps,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng,
            "consecutive_skips": self.consecutive_skips,
            "num_skipped": self.num_skipped,
            "elapsed_s": self.elapsed_s,
            "y_params": y_params,
        }
        ckpt_io.save(
            self.run_dir / "checkpoints",
            self.step,
            {"model.pt": self.model.state_dict(), "train_state.pt": train_state},
            self.cfg.to_dict(),
            keep=self.cfg.checkpoint.keep,
        )
        self.saved_step = self.step

    def refresh_plots(self, *, force: bool = True) -> None:
        """Redraw the PNGs; during the run at most every PLOT_INTERVAL_S seconds (drawing is not free)."""
        if self.is_main and (force or time.monotonic() - self._plotted_at >= PLOT_INTERVAL_S):
            from .plots import write_plots

            self._plotted_at = time.monotonic()
            title = f"{self.cfg.optim.name}, {self.cfg.train.model_size} model ({self.model.num_params():,} params)"
            write_plots(self.run_dir, self.metrics.rows, title)

    # ------------------------------------------------------------------ the loop
    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stop_requested = True  # serviced at the next step boundary (or inside an evaluation pass)
        self.stop_signal = signum
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def run(self, *, resumed: bool = False) -> RunResult:
        """Train to the budget. SIGTERM or a first Ctrl-C: save a checkpoint at the next step boundary, return."""
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics.open(self.step if resumed else None)
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        bar = self._progress_bar()
        try:
            if self.step == 0 and not resumed:
                self.at_x(evaluate=True, save=False)
            while self.step < self.total_steps and not self.stop_requested:
                t0 = time.perf_counter()
                values = self.train_step()
                self.step += 1
                self.stop_requested = dist_lab.any_rank(self.stop_requested, self.dist)  # all ranks stop together
                dt = time.perf_counter() - t0
                self.elapsed_s += dt
                self._log_train(values, dt, bar)
                if self.consecutive_skips >= self.cfg.train.max_consecutive_skips:
                    raise UserError(
                        f"training diverged: {self.consecutive_skips} consecutive non-finite steps up to step "
                        f"{self.step}; the last good checkpoint is kept in {self.run_dir / 'checkpoints'}"
                    )
                last = self.step == self.total_steps
                evaluate = last or self._due(self.cfg.train.eval_every) or self.step in self.log_eval_steps
                save = last or self._due(self.cfg.checkpoint.every) or self.stop_requested
                if evaluate or save:
                    self.at_x(evaluate=evaluate and not self.stop_requested, save=save)
            if self.stop_requested and self.saved_step != self.step:
                self.at_x(evaluate=False, save=True)  # stopped during step 0's evaluation
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if bar is not None:
                bar.close()
            self.metrics.close()
        self.refresh_plots()
        return RunResult(
            self.step, self.total_steps, self.step < self.total_steps, self.last_eval, self.run_dir, self.stop_signal
        )

    def _log_train(self, values: dict[str, Any], dt: float, bar: Any) -> None:
        tok_per_s = self.tokens_per_step / dt if dt > 0 else float("nan")
        if self.step % self.cfg.train.log_every == 0 or self.step == self.total_steps:
            row = {"kind": "train", "step": self.step, "tokens": self.step * self.tokens_per_step}
            row.update(values)
            row.update(tok_per_s=tok_per_s, elapsed_s=self.elapsed_s)
            self.metrics.write(row)
        if bar is not None:
            postfix = {"loss": f"{values['loss']:.3f}", "tok/s": f"{tok_per_s:,.0f}"}
            if "alpha" in values:
                postfix["alpha"] = f"{values['alpha']:.2e}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)

    def _progress_bar(self) -> Any:
        if not (self.is_main and self.cfg.train.progress) or self.step >= self.total_steps:
            return None  # (a finished run resumed has no steps to show: a full bar drawn twice said nothing)
        from tqdm import tqdm

        return tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True, mininterval=0.5)
