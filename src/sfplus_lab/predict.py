"""``sfplus predict RUN...``: predict a run's final validation loss from its early evaluations.

A schedule-free run is usable at every step, so its validation curve has no cooldown bend to wait for:
early on it follows the shape the theory of averaged iterates gives, a loss gap that shrinks like
1/sqrt(t). We fit

    val_loss(t) = a / sqrt(t + b) + c        (a >= 0, b >= 0; c is the loss the run tends to)

to the evaluations in the first ``--fraction`` (default 0.5) of the run and report the value at the run's last step,
and, when the run has finished, the measured final loss and the error.

The fit is ``curve_fit.py`` (pure functions, the standard library only); this module reads the runs (lab
run folders and bench run records) and is the command. How sure the prediction is: a jackknife standard
error, the spread of the predictions refitted with each fitted evaluation left out in turn. It measures how
much the fitted points alone pin the curve down, not whether the curve's shape holds later
(docs/averaging.md has the errors measured on finished runs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .curve_fit import MIN_POINTS, Fit, fit_inverse_sqrt, jackknife_stderr
from .errors import UserError
from .metrics import read_metrics

__all__ = [
    "Prediction",
    "predict_rows",
    "predict_run",
    "read_bench_run",
    "read_eval_rows",
    "add_arguments",
    "run",
]

#: Keys of config.json that may hold the planned number of optimizer steps (the lab's and common names).
_STEP_KEYS = ("steps", "max_steps", "total_steps", "num_steps", "train_steps")


@dataclass(frozen=True, slots=True)
class Prediction:
    """One run's prediction; ``actual`` and the errors are None while the run has not reached ``target_step``."""

    run: str
    metric: str
    fit_from_step: int
    fit_until_step: int
    target_step: int
    predicted: float
    actual: float | None
    abs_error: float | None
    rel_error: float | None
    fit: Fit
    stderr: float | None = None
    """Jackknife standard error of ``predicted`` (how firmly the fitted points fix the curve)."""
    note: str | None = None
    """Set when the fitted part had to be widened beyond ``--fraction`` to hold enough evaluations, or when
    it is a plateau (the fit's asymptote is the lowest loss seen), from which a later descent is not foreseen."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------- runs
def read_eval_rows(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) of every metrics.jsonl row that has ``metric``, in step order (the last row per step wins)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder: {path} does not exist")
    by_step: dict[int, float] = {}
    for row in read_metrics(path):
        if "step" in row and isinstance(row.get(metric), (int, float)):
            by_step[int(row["step"])] = float(row[metric])
    return sorted(by_step.items())


def fit_start(optim: dict | None) -> int:
    """The first step the fit uses: after the warm start (``c_warmup``) and after twice the warmup of the step
    (``warmup_steps``), whichever is later. During the warm start x simply follows z; during and just after
    the warmup the loss falls far faster than the fitted law (the quickstart's unigram plateau ends near step
    60). Twice the warmup is the span the paper advises for the warm start, and was the library's until the
    default dropped the warm start. 1 when the settings are unknown."""
    if not isinstance(optim, dict):
        return 1

    def count(name: str) -> int:
        value = optim.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    return max(count("c_warmup"), 2 * count("warmup_steps")) + 1


def _fit_start_of(run: Path) -> int:
    """:func:`fit_start` from a lab run's config.json or a bench record's optim section (1 when unknown)."""
    path = run if run.is_file() else run / "config.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return 1
    return fit_start(record.get("optim") if isinstance(record, dict) else None)


def read_bench_run(path: Path, metric: str) -> tuple[list[tuple[int, float]], int | None]:
    """(step, value) rows and the horizon of one ``sfplus bench`` run record (``runs/*.json``).

    ``val_loss`` is the record's pooled loss; ``val_loss/NAME`` its loss on source NAME.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    curve = record.get("curve") if isinstance(record, dict) else None
    if not isinstance(curve, list):
        raise UserError(f"{path} is not an sfplus bench run record (no 'curve')")
    source = metric.split("/", 1)[1] if metric.startswith("val_loss/") else None
    rows: dict[int, float] = {}
    for point in curve:
        value = point.get("pooled") if source is None else (point.get("per_source") or {}).get(source)
        if isinstance(value, (int, float)) and isinstance(point.get("step"), int):
            rows[point["step"]] = float(value)
    horizon = record.get("horizon_steps")
    return sorted(rows.items()), horizon if isinstance(horizon, int) and horizon > 0 else None


def planned_steps(run_dir: Path) -> int | None:
    """The run's planned number of optimizer steps, from config.json (None if it cannot tell).

    A lab run records its budget in tokens (``train.tokens``, or ``train.tokens_per_param`` times the
    model's parameters); the tokens per step come from the metrics rows (they include every data-parallel
    rank) or else from ``data.batch_size * data.seq_len``. Other runs may record a step count directly.
    """
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    from_tokens = _steps_from_token_budget(run_dir, config)
    if from_tokens is not None:
        return from_tokens
    for section in [config] + [v for v in config.values() if isinstance(v, dict)]:
        for key in _STEP_KEYS:
            value = section.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _steps_from_token_budget(run_dir: Path, config: dict[str, Any]) -> int | None:
    train, data = config.get("train"), config.get("data")
    if not isinstance(train, dict) or not isinstance(data, dict):
        return None
    tokens = train.get("tokens")
    if tokens is None and train.get("tokens_per_param") and isinstance(config.get("model"), dict):
        tokens = train["tokens_per_param"] * _num_params(config["model"])
    per_step = _tokens_per_step(run_dir) or (data.get("batch_size") or 0) * (data.get("seq_len") or 0)
    if not tokens or not per_step:
        return None
    return max(1, math.ceil(tokens / per_step))


def _num_params(model_config: dict[str, Any]) -> int:
    """Parameters of the lab GPT, built on the meta device (no memory, no time)."""
    import torch

    from .model import GPT, ModelConfig

    with torch.device("meta"):
        return GPT(ModelConfig(**model_config)).num_params()


def _tokens_per_step(run_dir: Path) -> int | None:
    try:
        rows = read_metrics(run_dir / "metrics.jsonl")
    except (OSError, UserError):
        return None
    for row in rows:
        if isinstance(row.get("tokens"), int) and isinstance(row.get("step"), int) and row["step"] > 0:
            return row["tokens"] // row["step"]
    return None


def predict_run(
    run_dir: str | Path,
    *,
    fraction: float = 0.5,
    metric: str = "val_loss",
    target_step: int | None = None,
    from_step: int | None = None,
) -> Prediction:
    """Fit the evaluations at steps in [from_step, fraction * target] and predict ``metric`` at the target step.

    The target is ``target_step`` if given, else the planned steps in config.json, else the last
    evaluated step. ``from_step`` defaults to :func:`fit_start`: after the warm start (``c_warmup``) and
    twice the warmup, whichever is later. ``actual`` is the evaluation at the target step
    when the run has one.
    """
    run_dir = Path(run_dir)
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"--fraction must be in (0, 1], got {fraction}")
    if run_dir.is_file() and run_dir.suffix == ".json":
        rows, planned = read_bench_run(run_dir, metric)
    else:
        rows, planned = read_eval_rows(run_dir, metric), None
        if rows:
            planned = planned_steps(run_dir)
    if not rows:
        raise UserError(f"{run_dir} has no evaluations of {metric!r}")
    start = from_step if from_step is not None else _fit_start_of(run_dir)
    return predict_rows(rows, fraction=fraction, target_step=target_step or planned or rows[-1][0], start=start,
                        name=str(run_dir), metric=metric)  # fmt: skip


def predict_rows(
    rows: Sequence[tuple[int, float]], *, fraction: float, target_step: int, start: int, name: str = "",
    metric: str = "val_loss",
) -> Prediction:
    """The prediction from (step, value) evaluations: fit those in [start, fraction * target], or, when that
    holds fewer than MIN_POINTS, the first MIN_POINTS from ``start`` on (noted), as long as they end before
    the target. ``sfplus predict`` and the check in docs/averaging.md both come here."""
    target = target_step
    until = int(fraction * target)
    early = [(t, y) for t, y in rows if start <= t <= until]
    note = None
    if len(early) < MIN_POINTS:
        after = [(t, y) for t, y in rows if t >= start]
        if len(after) >= MIN_POINTS and after[MIN_POINTS - 1][0] < target:
            wanted = f"the first {fraction:g} of the run (steps {start}..{until})" if until >= start else (
                f"the first {fraction:g} of the run (it ends at step {until}, before step {start})")
            early, until = after[:MIN_POINTS], after[MIN_POINTS - 1][0]
            note = (f"{name}: fitted steps {start}..{until} ({until / target:.2f} of the run): {wanted} held "
                    f"fewer than the {MIN_POINTS} evaluations the fit needs")
        else:
            where = f"in steps {start}..{until}" if until >= start else (
                f"after step {start} (the first {fraction:g} of {target} steps ends at step {until})")
            raise UserError(
                f"{name}: only {len(after)} evaluations of {metric} from step {start} on, and {len(early)} {where}; "
                f"the fit needs {MIN_POINTS} before the target step {target}: evaluate more often "
                "(sfplus train --evals-per-decade) or lower --from-step"
            )
    ts, ys = [t for t, _ in early], [y for _, y in early]
    fit = fit_inverse_sqrt(ts, ys)
    if fit.c >= min(ys) - 1e-9 * max(1.0, abs(min(ys))):
        plateau = (f"{name}: the fitted evaluations have stopped falling (the asymptote c is the lowest loss seen, "
                   f"{min(ys):.4f}): a plateau, and a later descent cannot be foreseen from it; the prediction is "
                   "likely too high whatever its standard error says: fit a later part (raise --fraction)")
        note = plateau if note is None else f"{note}; {plateau[len(name) + 2:]}"
    predicted = fit(target)
    actual = dict(rows).get(target)
    abs_error = None if actual is None else predicted - actual
    rel_error = None if actual is None or actual == 0 else abs_error / actual
    return Prediction(
        run=name, metric=metric, fit_from_step=start, fit_until_step=until, target_step=target,
        predicted=predicted, actual=actual, abs_error=abs_error, rel_error=rel_error, fit=fit,
        stderr=jackknife_stderr(ts, ys, target), note=note,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders (metrics.jsonl), or sfplus bench run records (runs/*.json)"
    )
    parser.add_argument(
        "--fraction", type=float, default=0.5,
        help="fit the evaluations in this first fraction of the run (0.5; widened to the first 4 evaluations after "
        "the fit's first step when it holds fewer)",
    )
    parser.add_argument("--metric", default="val_loss", help="the metrics.jsonl field to predict (val_loss)")
    parser.add_argument(
        "--at-step", type=int, default=None, help="predict at this step (default: the run's planned last step)"
    )
    parser.add_argument(
        "--from-step", type=int, default=None,
        help="ignore evaluations before this step (default: after c_warmup and 2 x warmup_steps)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run(name: str, args: argparse.Namespace) -> int:
    """One prediction per run; a run that cannot be predicted is reported on stderr and the others still print.

    Exit status 0 when every run was predicted, 2 when any was not.
    """
    if args.at_step is not None and args.at_step < 1:
        raise UserError(f"--at-step must be a positive step, got {args.at_step}")
    predictions, failures = [], []
    for path in args.runs:
        try:
            predictions.append(predict_run(
                path, fraction=args.fraction, metric=args.metric, target_step=args.at_step, from_step=args.from_step
            ))  # fmt: skip
        except UserError as exc:
            failures.append(str(exc))
    for message in failures:
        print(f"sfplus predict: error: {message}", file=sys.stderr)
    for p in predictions:
        if p.note:
            print(f"sfplus predict: note: {p.note}", file=sys.stderr)
    if args.json:
        for p in predictions:
            print(json.dumps(p.to_dict()))
        return 2 if failures else 0
    if predictions:
        print(f"| run | fitted steps | {args.metric} predicted at step | ± (jackknife s.e.) | measured | error | "
              "a | b | c |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in predictions:
        error = "-" if p.abs_error is None else f"{p.abs_error:+.4f} ({100 * p.rel_error:+.2f}%)"
        print(
            f"| {p.run} | {p.fit_from_step}-{p.fit_until_step} | {p.predicted:.4f} @ {p.target_step} | "
            f"{_fmt(p.stderr, '.4f')} | {_fmt(p.actual, '.4f')} | {error} | {p.fit.a:.4g} | {p.fit.b:.4g} | "
            f"{p.fit.c:.4f} |"
        )
    return 2 if failures else 0
