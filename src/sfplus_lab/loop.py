"""The one training step and the one evaluation at x that ``sfplus train`` and ``sfplus bench`` both run.

``trainer.Trainer`` (checkpoints, signals, metrics, data parallel) and ``bench.runner`` (budgets, WSD
branches) differ in what they do around a step, not in the step: both call :func:`train_step` for
forward, backward and the optimizer step, and :func:`evaluate` for the validation loss with the
parameters at x (inside ``optim_factory.at_x``). What differs is passed in: the forward (a compiled or
DDP-wrapped model), the autocast context, gradient clipping, the non-finite check, the cross-rank sum.

Both functions are deterministic on CPU in fp32: the same inputs give the same bits, so a run's numbers do
not depend on which command trained it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .optim_factory import step as optimizer_step

__all__ = ["train_step", "evaluate"]

Forward = Callable[[torch.Tensor, torch.Tensor], tuple[Any, torch.Tensor]]
"""``forward(inputs, targets) -> (logits, mean loss)``: the lab's ``GPT`` or a wrapper of it."""


def train_step(
    forward: Forward,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    grad_clip: float = 0.0,
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    skip: Callable[[torch.Tensor], bool] | None = None,
) -> tuple[torch.Tensor, bool]:
    """One step at y: forward, backward, optional clipping, the optimizer step (``optim_factory.step``,
    which gives ScheduleFree+ the loss), zeroed gradients, the LR schedule's step.

    ``skip(loss)``, when given and true, stops before the backward pass: no gradients, no step, no schedule
    step (the caller decides what a skipped step means). Returns ``(loss, stepped)``.
    """
    with context():
        _, loss = forward(inputs, targets)
    if skip is not None and skip(loss):
        return loss, False
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer_step(optimizer, loss)
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return loss, True


@torch.no_grad()
def evaluate(
    forward: Forward,
    windows: Mapping[str, Iterable[tuple[torch.Tensor, torch.Tensor]]],
    device: torch.device,
    *,
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    reduce: Callable[[Sequence[float]], Sequence[float]] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """Mean validation loss per source and pooled over every token, with whatever parameters the model holds
    (call it inside ``optim_factory.at_x`` for x).

    ``windows`` maps each source to its ``(inputs, targets)`` batches. Each source's loss sum and token count
    are accumulated in float64; ``reduce`` (the data-parallel sum) gets them as one flat list
    ``[loss_0, tokens_0, loss_1, ...]``. ``stop()`` is checked before each batch; when it is true the pass is
    abandoned and None returned. Returns ``{"pooled": float, "per_source": {name: float}}``.
    """
    sums: list[float] = []
    for batches in windows.values():
        loss_sum, tokens = 0.0, 0
        for x, y in batches:
            if stop is not None and stop():
                return None
            with context():
                _, loss = forward(x.to(device), y.to(device))
            loss_sum += float(loss) * y.numel()
            tokens += y.numel()
        sums += [loss_sum, tokens]
    if reduce is not None:
        sums = list(reduce(sums))
    per_source = {name: sums[2 * i] / sums[2 * i + 1] for i, name in enumerate(windows)}
    return {"pooled": sum(sums[0::2]) / sum(sums[1::2]), "per_source": per_source}
