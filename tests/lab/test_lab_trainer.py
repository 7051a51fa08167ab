"""The training loop in-process: non-finite steps are skipped and counted, K in a row abort with the checkpoint kept."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from sfplus_lab import checkpoint as ck
from sfplus_lab.config import CheckpointConfig
from sfplus_lab.errors import UserError
from sfplus_lab.optim_factory import OptimConfig
from sfplus_lab.recipes import get_recipe
from sfplus_lab.trainer import Trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from sfplus_lab.data import load_corpus

    return load_corpus(None, cache_dir=str(tmp_path_factory.mktemp("cache")))


def _trainer(corpus, run_dir, *, optimizer: str, steps: int, max_skips: int = 10) -> Trainer:
    cfg = get_recipe("tiny")
    cfg = replace(
        cfg,
        optim=OptimConfig(name=optimizer, warmup_steps=2),
        train=replace(cfg.train, tokens=steps * 512, eval_every=100, max_consecutive_skips=max_skips),
        checkpoint=CheckpointConfig(every=2, keep=2),
    )
    return Trainer(cfg, corpus, run_dir)


def _poison(trainer: Trainer, bad_steps) -> None:
    """Make the loss (and so every gradient) NaN on the given 0-based step indices."""
    real = trainer.forward

    def forward(x, y):
        logits, loss = real(x, y)
        return logits, loss * math.nan if trainer.step in bad_steps else loss

    trainer.forward = forward


@pytest.mark.parametrize("optimizer", ["sfplus", "adamw-linear"])
def test_a_nan_step_is_skipped_counted_and_training_goes_on(corpus, tmp_path, optimizer):
    trainer = _trainer(corpus, tmp_path, optimizer=optimizer, steps=10)
    _poison(trainer, {6})
    with pytest.warns(RuntimeWarning, match="non-finite") if optimizer == "sfplus" else _no_warning():
        trainer.run()
    train = [r for r in trainer.metrics.rows if r["kind"] == "train"]
    assert [r["step"] for r in train if r.get("status") == "skipped_nonfinite"] == [7]
    assert train[6]["loss"] is None  # NaN is written as JSON null
    assert trainer.num_skipped == 1 and trainer.consecutive_skips == 0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    state = ck.load(ck.latest_valid(tmp_path / "checkpoints"))["train_state"]
    assert state["num_skipped"] == 1


def test_consecutive_nan_steps_abort_and_keep_the_last_good_checkpoint(corpus, tmp_path):
    trainer = _trainer(corpus, tmp_path, optimizer="sfplus", steps=20, max_skips=3)
    _poison(trainer, set(range(5, 100)))
    with pytest.warns(RuntimeWarning), pytest.raises(UserError, match="3 consecutive non-finite steps up to step 8"):
        trainer.run()
    # steps 6-8 were skipped (nothing applied); the abort at step 8 comes before that step's checkpoint
    latest = ck.latest_valid(tmp_path / "checkpoints")
    assert latest is not None and latest.step == 6 and ck.verify(latest.path) == 6
    assert ck.load(latest)["train_state"]["consecutive_skips"] == 1


def test_evaluation_does_not_change_the_training_path(corpus, tmp_path):
    """Evaluating every step (eval/train round trips) gives the same losses as evaluating only at the end."""
    losses = []
    for eval_every in (1, 100):
        trainer = _trainer(corpus, tmp_path / str(eval_every), optimizer="sfplus", steps=12)
        trainer.cfg = replace(trainer.cfg, train=replace(trainer.cfg.train, eval_every=eval_every))
        trainer.run()
        losses.append([r["loss"] for r in trainer.metrics.rows if r["kind"] == "train"])
    assert losses[0] == losses[1]


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_log_spaced_evaluations_fill_the_early_run(corpus, tmp_path):
    """The default recipe evaluates 20 times per decade after eval_every, so predict has points early on."""
    from sfplus_lab.trainer import log_spaced_steps

    assert sorted(log_spaced_steps(50, 586, 20))[:8] == [50, 56, 63, 71, 79, 89, 100, 112]
    assert log_spaced_steps(50, 586, 0) == set() and log_spaced_steps(50, 40, 20) == set()
    assert get_recipe("default").train.evals_per_decade == 20
    trainer = _trainer(corpus, tmp_path, optimizer="sfplus", steps=30)
    trainer.cfg = replace(trainer.cfg, train=replace(trainer.cfg.train, eval_every=10, evals_per_decade=10))
    trainer.log_eval_steps = log_spaced_steps(10, trainer.total_steps, 10)
    trainer.run()
    evals = [r["step"] for r in trainer.metrics.rows if r["kind"] == "eval"]
    assert evals == [0, 10, 13, 16, 20, 25, 30]


def test_resuming_a_finished_run_draws_no_progress_bar(corpus, tmp_path, capsys):
    trainer = _trainer(corpus, tmp_path, optimizer="sfplus", steps=4)
    trainer.run()
    again = _trainer(corpus, tmp_path, optimizer="sfplus", steps=4)
    again.cfg = replace(again.cfg, train=replace(again.cfg.train, progress=True))
    assert again.resume_from(tmp_path / "checkpoints").step == 4
    capsys.readouterr()
    again.run(resumed=True)
    assert "step/s" not in capsys.readouterr().err and again._progress_bar() is None
