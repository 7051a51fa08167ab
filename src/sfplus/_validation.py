"""Range checks shared by both optimizer classes: every bad hyperparameter is a ValueError naming it.

Comparisons are written in the NaN-safe form ``if not lo <= x < hi`` so that NaN is always refused.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

NONFINITE_POLICIES = ("skip", "raise")


def _real(name: str, value: Any) -> float:
    # torch is not imported here (``sfplus.jax`` validates without it): a torch tensor can only exist
    # if torch has already been imported.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ValueError(f"Invalid {name} value: {value} (expected a real number or a 0-D tensor)")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name} value: {value!r} (expected a real number)")
    return float(value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Invalid {name} value: {value!r} (expected a non-negative int)")
    if value < 0:
        raise ValueError(f"Invalid {name} value: {value} (expected a non-negative int)")
    return value


def validate_adam(group: dict[str, Any]) -> None:
    """The Adam base step's hyperparameters: ``betas`` (a pair in [0, 1)) and ``eps`` (finite, > 0)."""
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas value: {betas!r} (expected a pair (beta1, beta2))")
    for i, beta in enumerate(betas):
        if not 0.0 <= _real(f"betas[{i}]", beta) < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta} (expected 0 <= beta < 1)")
    eps = _real("eps", group["eps"])
    if not 0.0 < eps < math.inf:
        raise ValueError(f"Invalid eps value: {eps} (expected a finite eps > 0)")


def validate_hyperparameters(
    group: dict[str, Any], *, warn: bool = True, inner_step_checks: Callable[[dict[str, Any]], None] = validate_adam
) -> None:
    """Check one param group's hyperparameters (constructor defaults or per-group overrides).

    ``warn=False`` skips the advisory warnings (the constructor's defaults are checked again per group).
    ``inner_step_checks`` checks the base step's own hyperparameters (Adam's betas and eps by default;
    ``sfplus._inner_step``).
    """
    lr = _real("lr", group["lr"])
    if not (0.0 <= lr < math.inf):
        raise ValueError(f"Invalid learning rate: {lr} (lr is a finite multiplier >= 0; default 1.0)")
    inner_step_checks(group)
    wd = _real("weight_decay", group["weight_decay"])
    if not 0.0 <= wd < math.inf:
        raise ValueError(f"Invalid weight_decay value: {wd} (expected finite >= 0; AdamC scale, typical 5-50)")
    if warn and 0.0 < wd < 1.0:
        # AdamC decays by α²·λ per step, so AdamW-sized values (0.1) do almost nothing: say so once.
        warnings.warn(
            f"weight_decay={wd} is tiny for ScheduleFree+: the decay is AdamC's α²·λ·y per step, so useful "
            "values are 5-50, not AdamW's 0.1",
            UserWarning,
            stacklevel=2,
        )
    _count("warmup_steps", group["warmup_steps"])
    _count("sf_beta1_anneal_steps", group["sf_beta1_anneal_steps"])
    _count("c_warmup", group["c_warmup"])
    sf_beta1 = _real("sf_beta1", group["sf_beta1"])
    if not 0.0 < sf_beta1 < 1.0:
        raise ValueError(f"Invalid sf_beta1 value: {sf_beta1} (expected 0 < sf_beta1 < 1)")
    sf_beta1_max = _real("sf_beta1_max", group["sf_beta1_max"])
    if not 0.0 < sf_beta1_max < 1.0:
        raise ValueError(f"Invalid sf_beta1_max value: {sf_beta1_max} (expected 0 < sf_beta1_max < 1)")
    if group["sf_beta1_anneal_steps"] > 0 and not sf_beta1 <= sf_beta1_max:
        raise ValueError(
            f"Invalid sf_beta1_max value: {sf_beta1_max} (with sf_beta1_anneal_steps > 0 it must be "
            f">= sf_beta1 = {sf_beta1})"
        )
    polyak_beta = _real("polyak_beta", group["polyak_beta"])
    if not 0.0 <= polyak_beta < 1.0:
        raise ValueError(f"Invalid polyak_beta value: {polyak_beta} (expected 0 <= polyak_beta < 1)")
    for name in ("r", "weight_lr_power"):
        value = _real(name, group[name])
        if not 0.0 <= value < math.inf:
            raise ValueError(f"Invalid {name} value: {value} (expected finite >= 0)")
    loss_floor = _real("loss_floor", group["loss_floor"])
    if not math.isfinite(loss_floor):
        raise ValueError(f"Invalid loss_floor value: {loss_floor} (expected a finite lower bound of the loss)")
    for name in ("max_inner", "max_step_growth", "max_step_ratio"):
        if group[name] is not None:
            value = _real(name, group[name])
            if not 0.0 <= value < math.inf:
                raise ValueError(f"Invalid {name} value: {value} (expected None or finite >= 0)")
    if not isinstance(group["decay_1d"], bool):
        raise TypeError(f"Invalid decay_1d value: {group['decay_1d']!r} (expected True or False)")
    if not isinstance(group["bounded_decay"], bool):
        raise TypeError(f"Invalid bounded_decay value: {group['bounded_decay']!r} (expected True or False)")
    if warn and 0.0 < lr < 0.05:
        # A habit from AdamW: lr=1e-3 scales the Polyak step down a thousandfold and training crawls.
        warnings.warn(
            f"lr={lr} looks like a learning rate, but in ScheduleFree+ lr is a multiplier γ of the Polyak step "
            "(default 1.0): there is no learning rate to set. Values far below 1 slow training down by that factor.",
            UserWarning,
            stacklevel=2,
        )
    if group["max_step"] is not None:
        max_step = _real("max_step", group["max_step"])
        if not 0.0 < max_step < math.inf:
            raise ValueError(f"Invalid max_step value: {max_step} (expected None or finite > 0)")


def validate_options(nonfinite: str, foreach: bool | None, fused: bool | None = None, capturable: bool = False) -> None:
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"Invalid nonfinite value: {nonfinite!r} (expected one of {NONFINITE_POLICIES})")
    # ``in (None, True, False)`` would accept 1 and 0.0 (they compare equal to True/False): check the type.
    if not (foreach is None or isinstance(foreach, bool)):
        raise TypeError(f"Invalid foreach value: {foreach!r} (expected None, True or False)")
    if not (fused is None or isinstance(fused, bool)):
        raise TypeError(f"Invalid fused value: {fused!r} (expected None, True or False)")
    if not isinstance(capturable, bool):
        raise TypeError(f"Invalid capturable value: {capturable!r} (expected True or False)")
    if foreach and fused:
        raise RuntimeError("`foreach` and `fused` cannot both be True: pick the foreach or the compiled (fused) path")
