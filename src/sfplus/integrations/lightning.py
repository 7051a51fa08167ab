"""ScheduleFree+ in PyTorch Lightning: a callback that puts x in the model whenever it is not training.

Lightning steps the optimizer with a closure that runs the forward and backward passes and returns
the loss, which is all ScheduleFree+ needs, except in two places this callback fixes:

- with ``accumulate_grad_batches=N`` the closure returns only the *last* micro-batch's loss, divided
  by N; under a GradScaler (``precision="16-mixed"``) the step gets no loss at all. The callback adds
  up every micro-batch's share as it reaches ``backward`` (unscaled), so F is the mean over the
  micro-batches that made the gradient;
- Lightning validates, tests, predicts and checkpoints whatever the parameters hold, which is y while
  training. The callback switches the optimizer to x (``optimizer.eval()``) for validation, testing
  and prediction, back to y for training, and writes checkpoints with x in ``state_dict`` and the
  optimizer state in eval mode, so resuming (``ckpt_path=...``) rebuilds y from x and z exactly.

When ``fit`` ends the model is left holding x, the weights to evaluate and ship; the next ``fit``
switches back to y. Usage::

    from sfplus import ScheduleFreePlus
    from sfplus.integrations.lightning import ScheduleFreePlusCallback

    class Model(L.LightningModule):
        def configure_optimizers(self):
            return ScheduleFreePlus(self.parameters())

    L.Trainer(callbacks=[ScheduleFreePlusCallback()]).fit(Model(), data)

Gradient clipping (``gradient_clip_val``) inflates the Polyak step (docs/algorithm.md, "Known behaviour"): leave it off.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as exc:  # an optional dependency: say how to get it
    raise ImportError("sfplus.integrations.lightning needs the 'lightning' package: pip install lightning") from exc

from .._base import ScheduleFreePlusBase
from ._common import LossRelay, unwrap_sfplus

__all__ = ["ScheduleFreePlusCallback"]


def _sfplus_optimizers(trainer: pl.Trainer) -> list[tuple[int, ScheduleFreePlusBase]]:
    """(index in trainer.optimizers, the ScheduleFree+ inside) for each ScheduleFree+ optimizer."""
    found = []
    for i, optimizer in enumerate(trainer.optimizers):
        inner = unwrap_sfplus(optimizer)
        if inner is not None:
            found.append((i, inner))
    return found


def _cpu_copy(value: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU (a checkpoint must not alias live training state)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value


class ScheduleFreePlusCallback(pl.Callback):
    """Hands ScheduleFree+ the mean micro-batch loss and keeps x in the model outside training."""

    def __init__(self) -> None:
        super().__init__()
        self._relay = LossRelay()
        self._resume_training: dict[str, bool] = {}

    # ------------------------------------------------------------------ modes
    def _set_mode(self, trainer: pl.Trainer, training: bool) -> None:
        for _, optimizer in _sfplus_optimizers(trainer):
            if training:
                optimizer.train()
            else:
                optimizer.eval()

    def _enter_x(self, trainer: pl.Trainer, stage: str) -> None:
        optimizers = _sfplus_optimizers(trainer)
        self._resume_training[stage] = any(opt.train_mode for _, opt in optimizers)
        self._set_mode(trainer, training=False)

    def _leave_x(self, trainer: pl.Trainer, stage: str) -> None:
        if self._resume_training.pop(stage, False):
            self._set_mode(trainer, training=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for _, optimizer in _sfplus_optimizers(trainer):
            self._relay.attach(optimizer)
        self._set_mode(trainer, training=True)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self._set_mode(trainer, training=True)  # idempotent; covers a validation that ended elsewhere

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_mode(trainer, training=False)
        self._relay.detach()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter_x(trainer, "validate")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._leave_x(trainer, "validate")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter_x(trainer, "test")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._leave_x(trainer, "test")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter_x(trainer, "predict")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._leave_x(trainer, "predict")

    # ------------------------------------------------------------------ the loss
    def on_before_zero_grad(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self._relay.reset()  # a new accumulation window begins

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        # Lightning has already divided the loss by accumulate_grad_batches; a GradScaler has scaled it.
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            loss = loss.detach().float() / scaler.get_scale()
        self._relay.add(loss)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]):
        """Rewrite the checkpoint so it holds x and each ScheduleFree+ state in eval mode (a consistent pair)."""
        optimizers = [(i, opt) for i, opt in _sfplus_optimizers(trainer) if opt.train_mode]
        if not optimizers:
            return  # already at x (e.g. saved after validation or after fit): Lightning saved x
        states = checkpoint.get("optimizer_states")
        for _, optimizer in optimizers:
            optimizer.eval()
        try:
            weights = checkpoint.get("state_dict")
            if weights is not None:
                current = pl_module.state_dict()
                for key in weights:
                    if key in current:
                        weights[key] = current[key].detach().clone()
            if states is not None:
                for i, optimizer in optimizers:
                    states[i] = _cpu_copy(optimizer.state_dict())
        finally:
            for _, optimizer in optimizers:
                optimizer.train()
