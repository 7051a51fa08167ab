"""What the framework integrations share: finding ScheduleFree+ under wrappers, and relaying the loss.

Frameworks call ``optimizer.step()`` with no loss (the Hugging Face Trainer, Lightning under a
GradScaler) or with a closure that returns only the last micro-batch's loss, already divided by the
number of micro-batches (Lightning with ``accumulate_grad_batches``). ScheduleFree+ needs F, the mean
loss over the micro-batches that made the gradient (README, "Change one line", rule 1). :class:`LossRelay`
adds up each micro-batch's share of the loss, as the framework hands it to ``backward``, and a step pre-hook
gives the sum to ``step()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._base import ScheduleFreePlusBase

__all__ = ["LossRelay", "unwrap_sfplus"]


def unwrap_sfplus(optimizer: Any) -> ScheduleFreePlusBase | None:
    """The ScheduleFree+ optimizer inside framework wrappers (accelerate, Lightning, DeepSpeed), or None."""
    for _ in range(4):
        if optimizer is None or isinstance(optimizer, ScheduleFreePlusBase):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None)
    return None


class LossRelay:
    """This step's F, summed from the micro-batch losses, delivered to ScheduleFree+'s ``step()``.

    Each micro-batch loss given to :meth:`add` must already carry its share (the framework's division by
    the number of micro-batches), so the sum is the mean over the micro-batches. After a step the sum is
    cleared; :meth:`reset` clears it at the start of a new accumulation window too, so a step the
    framework skipped (a GradScaler overflow) leaves nothing behind.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self._hooked: dict[int, Any] = {}

    def reset(self) -> None:
        self.total = None

    def add(self, loss: torch.Tensor | float) -> None:
        value = torch.as_tensor(loss).detach().to(torch.float64)
        self.total = value if self.total is None else self.total + value.to(self.total.device)

    def attach(self, optimizer: Any) -> ScheduleFreePlusBase | None:
        """Hook the ScheduleFree+ optimizer under ``optimizer`` (once); returns it, or None if there is none."""
        inner = unwrap_sfplus(optimizer)
        if inner is not None and id(inner) not in self._hooked:
            self._hooked[id(inner)] = (
                inner.register_step_pre_hook(self._before_step),
                inner.register_step_post_hook(lambda *_: self.reset()),
            )
        return inner

    def detach(self) -> None:
        """Remove every hook this relay registered."""
        for handles in self._hooked.values():
            for handle in handles:
                handle.remove()
        self._hooked.clear()

    def _before_step(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # torch passes the bound step's positional arguments, ``self`` first.
        head = args[:1] if args and args[0] is optimizer else ()
        rest = args[len(head) :]
        closure = rest[0] if rest else kwargs.get("closure")
        if kwargs.get("loss") is not None:
            return None  # the caller passed the loss itself
        others = {key: value for key, value in kwargs.items() if key != "closure"}
        if closure is not None:
            return head, {**others, "closure": self._wrap(closure)}
        if self.total is None:
            return None  # nothing recorded: the optimizer raises its own clear error
        return head, {**others, "loss": self.total}

    def _wrap(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        """Run the framework's closure (the last micro-batch's forward/backward), then return the sum."""

        def relayed() -> Any:
            result = closure()
            return result if self.total is None else self.total

        return relayed
