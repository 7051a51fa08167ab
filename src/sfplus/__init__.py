"""sfplus: ScheduleFree+, a learning-rate-free and schedule-free optimizer for PyTorch.

>>> opt = sfplus.ScheduleFreePlus(model.parameters())
>>> opt.step(loss=loss)          # or opt.step(closure) with a closure that returns the loss
>>> opt.eval()                   # parameters hold the average x: evaluate, save, ship
>>> opt.train()                  # parameters hold y again: keep training
"""

from ._defaults import PAPER, PRESETS
from ._step_size import annealed_beta, averaging_weight, l1_ema_update, polyak_step, warmup_factor
from .functional import schedulefree_plus_update
from .optimizer import ScheduleFreePlus
from .reference import ScheduleFreePlusReference

__version__ = "0.1.0"

__all__ = [
    "ScheduleFreePlus",
    "ScheduleFreePlusReference",
    "PAPER",
    "PRESETS",
    "schedulefree_plus_update",
    "annealed_beta",
    "averaging_weight",
    "l1_ema_update",
    "polyak_step",
    "warmup_factor",
    "__version__",
]
