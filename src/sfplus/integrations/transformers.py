"""ScheduleFree+ inside Hugging Face ``transformers.Trainer``.

The Trainer calls ``optimizer.step()`` with no loss, saves whatever the parameters hold, and wraps the
learning rate in a decaying schedule by default. With ScheduleFree+ each of these is a silent bug: the
Polyak step needs the loss F, the model to save is the average x (the parameters hold y while
training), and a decaying ``lr`` shrinks γ, which is a multiplier of the Polyak step, not a learning rate.

:class:`ScheduleFreePlusTrainer` fixes them and is otherwise the stock Trainer::

    from sfplus.integrations.transformers import ScheduleFreePlusTrainer
    trainer = ScheduleFreePlusTrainer(model=model, args=args, train_dataset=train, eval_dataset=val)
    trainer.train()                # F of every step reaches the optimizer
    trainer.evaluate()             # at x
    trainer.save_model("out")      # writes x

What it does:

- builds :class:`sfplus.ScheduleFreePlus`, with the library's defaults, over the Trainer's own decay /
  no-decay parameter groups. ``args.weight_decay`` is AdamC's λ (useful values 5-50, not AdamW's 0.01);
  the Trainer's default 0.0 is read as "not set" and the library's λ is used, since taking it literally
  would switch AdamC decay off unasked: ``sfplus_kwargs={"weight_decay": 0.0}`` turns it off;
- hands the optimizer the loss of the step: the sum of what ``training_step`` returned for the step's
  micro-batches, which the Trainer has already divided for gradient accumulation, so it is the mean over
  the micro-batches that made the gradient (and, under data parallelism, the optimizer averages it over
  ranks);
- evaluates, predicts and saves (``save_model`` and the Trainer's checkpoints) at x, then returns to y;
  a checkpoint holds x in the weights and the optimizer state in eval mode, so the Trainer's own
  ``resume_from_checkpoint`` rebuilds y exactly where it was;
- uses a constant LR schedule; a warmup set in ``args`` (``warmup_steps``, or ``warmup_ratio`` of the
  planned steps) becomes the optimizer's own warmup (``c_warmup`` stays the library's: no warm start of
  the average; pass it in ``sfplus_kwargs`` for one); with none set the library's defaults apply.
  ``args.learning_rate`` and ``args.lr_scheduler_type`` are not used;
- does not clip gradients unless asked: clipping shrinks ‖g‖₁ but not F and so inflates the step
  (docs/algorithm.md, "Known behaviour"). ``allow_grad_clipping=True`` restores the Trainer's clipping.

Each step's optimizer scalars (``sfplus_alpha``, ``sfplus_beta``, ``sfplus_c``, ``sfplus_num_skipped``)
are added to the Trainer's logs.

Tested with transformers 5.24 and accelerate 1.15 (single process). It overrides a few private Trainer
methods (``_save_checkpoint``, ``_clip_grad_norm``, ``_load_best_model``); DeepSpeed and FSDP wrap the
optimizer and the saving path differently and are not covered.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

try:
    from transformers import Trainer
except ImportError as exc:  # an optional dependency: say how to get it
    raise ImportError(
        "sfplus.integrations.transformers needs the 'transformers' and 'accelerate' packages: "
        "pip install transformers accelerate"
    ) from exc

from .._base import ScheduleFreePlusBase
from .._defaults import PRESETS
from ..optimizer import ScheduleFreePlus
from ._common import LossRelay, unwrap_sfplus

__all__ = ["ScheduleFreePlusTrainer"]

logger = logging.getLogger(__name__)


class _ConstantLR(torch.optim.lr_scheduler.LambdaLR):
    """A schedule that never changes γ: the Polyak step is the schedule (docs/algorithm.md, step 4)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        super().__init__(optimizer, lr_lambda=_one)


def _one(_: int) -> float:
    """Module-level, so the scheduler's state_dict pickles."""
    return 1.0


class ScheduleFreePlusTrainer(Trainer):
    """A ``transformers.Trainer`` that trains with ScheduleFree+ and evaluates, predicts and saves at x.

    Args:
        *args, **kwargs: passed to ``transformers.Trainer`` unchanged.
        sfplus_kwargs: keyword arguments for :class:`sfplus.ScheduleFreePlus`; anything not given takes the
            library's default, except ``warmup_steps`` (from ``args`` when set there) and the decay
            group's ``weight_decay`` (``sfplus_kwargs``, else a non-zero ``args.weight_decay``, else the
            library's λ). ``sfplus_kwargs=sfplus.PAPER`` gives the paper's exact update.
        allow_grad_clipping: clip gradients to ``args.max_grad_norm`` as the Trainer does. Off by
            default because clipping inflates the Polyak step.
    """

    def __init__(
        self, *args: Any, sfplus_kwargs: dict[str, Any] | None = None, allow_grad_clipping: bool = False, **kwargs: Any
    ) -> None:
        self.sfplus_kwargs = dict(sfplus_kwargs or {})
        for key in ("params",):
            if key in self.sfplus_kwargs:
                raise ValueError(
                    f"sfplus_kwargs[{key!r}] is not accepted: the Trainer builds the parameter groups and takes "
                    "weight_decay from TrainingArguments.weight_decay (AdamC's λ, typically 5-50)"
                )
        self.allow_grad_clipping = allow_grad_clipping
        self._sfplus_relay = LossRelay()  # this step's F, summed over its micro-batches
        self._sfplus_relay_step = -1  # the global_step the relayed loss belongs to
        self._sfplus_num_warmup: int | None = None
        super().__init__(*args, **kwargs)
        if self.args.max_grad_norm and self.args.max_grad_norm > 0 and not allow_grad_clipping:
            logger.warning(
                "ScheduleFreePlusTrainer: gradient clipping (max_grad_norm=%s) is off: clipping shrinks ||g||_1 "
                "but not the loss, which inflates the Polyak step. Pass allow_grad_clipping=True to clip anyway.",
                self.args.max_grad_norm,
            )

    # ------------------------------------------------------------------ optimizer and schedule
    @property
    def sfplus_optimizer(self) -> ScheduleFreePlusBase | None:
        """The ScheduleFree+ optimizer under the Trainer's wrappers (None before it is created)."""
        return unwrap_sfplus(self.optimizer)

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self._sfplus_num_warmup = self.args.get_warmup_steps(num_training_steps)
        super().create_optimizer_and_scheduler(num_training_steps)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Build ScheduleFree+ over the Trainer's decay / no-decay groups (or keep one passed in)."""
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for n, p in named if n in decay], "weight_decay": self._decay_group_weight_decay()},
                {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            ]
            groups = [g for g in groups if g["params"]]
            options = dict(self.sfplus_kwargs)
            options.pop("weight_decay", None)  # already in the decay group
            warmup = self._default_warmup()
            if warmup > 0 and "warmup_steps" not in options:
                # The user asked the Trainer for a warmup: the optimizer's own warmup takes it (the warm start
                # of the average, c_warmup, stays the library's default unless given in sfplus_kwargs).
                options["warmup_steps"] = warmup
            self.optimizer = ScheduleFreePlus(groups, **options)
        self._sfplus_relay.attach(self.optimizer)
        return self.optimizer

    def _decay_group_weight_decay(self) -> float:
        """AdamC's λ for the decay group: ``sfplus_kwargs["weight_decay"]``, else a non-zero
        ``TrainingArguments.weight_decay``, else the library's default.

        The Trainer's own default is ``weight_decay=0.0``, meant for AdamW; taken as it is, it would switch
        AdamC decay off without the user having asked for that. To turn it off, pass
        ``sfplus_kwargs={"weight_decay": 0.0}``.
        """
        if "weight_decay" in self.sfplus_kwargs:
            return float(self.sfplus_kwargs["weight_decay"])
        if self.args.weight_decay:
            return float(self.args.weight_decay)
        return float(PRESETS["robust"]["weight_decay"])

    def _default_warmup(self) -> int:
        if self._sfplus_num_warmup is not None:
            return self._sfplus_num_warmup
        warmup = self.args.warmup_steps
        return int(warmup) if warmup >= 1 else 0  # a fraction needs the horizon, known only in train()

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """A constant schedule: warmup is the optimizer's own, and decay would fight the Polyak step."""
        if self.lr_scheduler is None:
            self.lr_scheduler = _ConstantLR(self.optimizer if optimizer is None else optimizer)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # ------------------------------------------------------------------ the loss of every step
    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The Trainer's step; also add the micro-batch's loss (already divided for accumulation) to F."""
        loss = super().training_step(*args, **kwargs)
        if self._sfplus_relay_step != self.state.global_step:
            # A new optimizer step: forget what a skipped step (e.g. a GradScaler overflow) left behind.
            self._sfplus_relay.reset()
            self._sfplus_relay_step = self.state.global_step
        self._sfplus_relay.add(loss)
        return loss

    def _clip_grad_norm(self, model: torch.nn.Module) -> Any:
        if self.allow_grad_clipping:
            return super()._clip_grad_norm(model)
        return None  # the Trainer then measures (and logs) the unclipped norm

    # ------------------------------------------------------------------ x for evaluation and saving
    @contextlib.contextmanager
    def params_at_x(self) -> Iterator[None]:
        """Hold the average x in the model's parameters inside the block, then restore the mode."""
        optimizer = self.sfplus_optimizer
        if optimizer is None:
            yield
            return
        with optimizer.eval_params():
            yield

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with self.params_at_x():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        with self.params_at_x():
            return super().predict(*args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        with self.params_at_x():
            super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        # Weights (x) and optimizer state are saved together in eval mode, so that loading both gives a
        # consistent pair and the next training_step's optimizer.train() rebuilds y from x and z.
        with self.params_at_x():
            super()._save_checkpoint(*args, **kwargs)

    def _load_best_model(self) -> None:
        # The best checkpoint's weights are x: say so to the optimizer, or a later save would treat
        # them as y and "average" them again.
        optimizer = self.sfplus_optimizer
        if optimizer is not None:
            optimizer.eval()
        super()._load_best_model()

    # ------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        optimizer = self.sfplus_optimizer
        if optimizer is not None and "loss" in logs and optimizer.stats:
            stats = optimizer.stats
            logs = {
                **logs,
                "sfplus_alpha": float(stats["alpha"]),
                "sfplus_beta": float(stats["beta"]),
                "sfplus_c": float(stats["c"]),
                "sfplus_num_skipped": int(stats["num_skipped"]),
            }
        super().log(logs, *args, **kwargs)
