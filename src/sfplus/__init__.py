"""sfplus: ScheduleFree+, a learning-rate-free and schedule-free optimizer for PyTorch (and JAX).

>>> opt = sfplus.ScheduleFreePlus(model.parameters())
>>> opt.step(loss=loss)          # or opt.step(closure) with a closure that returns the loss
>>> opt.eval()                   # parameters hold the average x: evaluate, save, ship
>>> opt.train()                  # parameters hold y again (bit for bit): keep training
>>> sfplus.merge_checkpoints([x_a, x_b], "online", [state_a, state_b])   # sfplus.merge: merging checkpoints

The pure-Python pieces (the presets, the scalar schedule) are imported eagerly; everything that needs
torch is imported on first use (PEP 562), so ``import sfplus.jax`` works without torch installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._defaults import PAPER, PRESETS
from ._step_size import annealed_beta, averaging_weight, l1_ema_update, polyak_step, warmup_factor

__version__ = "0.1.0"

#: Public names that need torch, and the module that defines each: imported on first access.
_TORCH_NAMES = {
    "ScheduleFreePlus": ".optimizer",
    "ScheduleFreePlusReference": ".reference",
    "schedulefree_plus_update": ".functional",
    "averaging_weights": ".merge",
    "merge_checkpoints": ".merge",
}
#: Submodules reachable as attributes of ``sfplus`` (``sfplus.functional``) without an explicit import,
#: as they were when this file imported them eagerly.
_SUBMODULES = (
    "optimizer",
    "reference",
    "functional",
    "merge",
    "_base",
    "_distributed",
    "_validation",
    "integrations",
)

__all__ = [
    "ScheduleFreePlus",
    "ScheduleFreePlusReference",
    "PAPER",
    "PRESETS",
    "schedulefree_plus_update",
    "averaging_weights",
    "merge_checkpoints",
    "annealed_beta",
    "averaging_weight",
    "l1_ema_update",
    "polyak_step",
    "warmup_factor",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        value = getattr(importlib.import_module(_TORCH_NAMES[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_NAMES) | set(_SUBMODULES))
