"""The scalar schedule of ``_step_size.py`` on 0-D float64 tensors, without a host synchronisation.

Each function here is the tensor twin of the float function of the same name in ``_step_size.py``, the
same operations in the same order, so on CPU the two agree bit for bit (``tests/optim/test_step_size.py``
checks it on a grid). A branch on a hyperparameter (a Python value fixed at construction) stays a Python
``if``; a branch on a value that the step computes (k, p_ref, the weight sum, ...) is a ``torch.where``,
so nothing here ever reads a device value back to the host.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._step_size import SQRT_HALF_PI, TINY
from .functional import update_coefficient_rows

__all__ = [
    "annealed_beta",
    "averaging_weight",
    "bounded_decay_rate",
    "growth_bounded_numerator",
    "l1_ema_update",
    "polyak_numerator",
    "ratio_bounded_numerator",
    "step_schedule",
    "warmup_factor",
]


def annealed_beta(k: Tensor, sf_beta1: float, sf_beta1_max: float, anneal_steps: int) -> Tensor | float:
    """β̃_k (eq. 1); ``k`` is a float64 0-D tensor. A float when there is no annealing."""
    if anneal_steps == 0:
        return sf_beta1
    p = torch.clamp(k / anneal_steps, max=1.0)
    return 1.0 - torch.exp((1.0 - p) * math.log1p(-sf_beta1) + p * math.log1p(-sf_beta1_max))


def l1_ema_update(
    e_prev: Tensor, l1: Tensor, polyak_beta: float, k: Tensor, scale: float = SQRT_HALF_PI
) -> tuple[Tensor, Tensor]:
    """Eq. 3: ``(e_k, ê_k)``."""
    e = polyak_beta * e_prev + (1.0 - polyak_beta) * scale * l1
    e_hat = e / (1.0 - torch.pow(polyak_beta, k))
    return e, e_hat


def polyak_numerator(loss: Tensor, inner: Tensor, loss_floor: float, max_inner: float | None) -> Tensor:
    """``max(0, F - f* + I)`` with the ``max_inner`` safeguard."""
    gap = loss - loss_floor
    if max_inner is not None:
        inner = torch.minimum(inner, max_inner * torch.clamp(gap, min=0.0))
    return torch.clamp(gap + inner, min=0.0)


def growth_bounded_numerator(
    numerator: Tensor, denominator: Tensor, p_ref: Tensor, max_step_growth: float | None
) -> Tensor:
    """The ``max_step_growth`` bound; none before the first positive step (``p_ref == 0``)."""
    if max_step_growth is None:
        return numerator
    bounded = torch.minimum(numerator, (1.0 + max_step_growth) * p_ref * denominator)
    return torch.where(p_ref > 0.0, bounded, numerator)


def ratio_bounded_numerator(
    numerator: Tensor, denominator: Tensor, p_first: Tensor, max_step_ratio: float | None
) -> Tensor:
    """The ``max_step_ratio`` bound; none before the first positive step (``p_first == 0``)."""
    if max_step_ratio is None:
        return numerator
    bounded = torch.minimum(numerator, max_step_ratio * p_first * denominator)
    return torch.where(p_first > 0.0, bounded, numerator)


def polyak_denominator(e_hat: Tensor) -> Tensor:
    """``max(ê, TINY)``."""
    return torch.clamp(e_hat, min=TINY)


def bounded_decay_rate(alpha: Tensor, weight_decay: float | Tensor, bounded: bool) -> float | Tensor:
    """The effective λ of eq. 5 (λ, or λ/(1 + α²λ) with ``bounded_decay``)."""
    if not bounded:
        return weight_decay
    return weight_decay / (1.0 + alpha * alpha * weight_decay)


def warmup_factor(k: Tensor, warmup_steps: int) -> Tensor | float:
    """``min(1, k / warmup_steps)``; 1.0 (a float) without warmup."""
    return 1.0 if warmup_steps == 0 else torch.clamp(k / warmup_steps, max=1.0)


def averaging_weight(
    k: Tensor, alpha: Tensor, lr_max_prev: Tensor, weight_sum_prev: Tensor, c_warmup: int, r: float,
    weight_lr_power: float,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Eq. 8: ``(c_k, γmax_k, W_k)``."""
    lr_max = torch.maximum(lr_max_prev, alpha)
    w = torch.pow(k, r) * torch.pow(lr_max, weight_lr_power)
    warm = k <= c_warmup
    weight_sum = torch.where(warm, weight_sum_prev, weight_sum_prev + w)
    positive = weight_sum > 0.0
    c = torch.where(positive, w / torch.where(positive, weight_sum, 1.0), 0.0)
    return torch.where(warm, 1.0, c), lr_max, weight_sum


# ---------------------------------------------------------------------------------------------- one step
class GroupConstants(NamedTuple):
    """The host constants of one param group that the step's scalar schedule reads."""

    sf_beta1: float
    sf_beta1_max: float
    sf_beta1_anneal_steps: int
    warmup_steps: int
    max_step: float | None
    c_warmup: int
    r: float
    weight_lr_power: float
    bounded_decay: bool
    #: ``(beta1, beta2, eps, split)`` when the step also computes the group's coefficient rows of the fused
    #: update (``functional.update_coefficient_rows``; ``split``: a second row with λ = 0 for 1-D tensors),
    #: else None (the other paths compute their coefficients where they update).
    rows: tuple[float, float, float, bool] | None


class ScheduleConstants(NamedTuple):
    """The host constants of the whole step's scalar schedule: the global hyperparameters, then per group."""

    polyak_beta: float
    polyak_scale: float
    loss_floor: float
    max_inner: float | None
    max_step_growth: float | None
    max_step_ratio: float | None
    groups: tuple[GroupConstants, ...]


def step_schedule(
    stats: Tensor, run: tuple[Tensor, ...], groups: tuple[tuple[Any, ...], ...], const: ScheduleConstants
) -> dict[str, Any]:
    """The whole scalar schedule of one step (docs/algorithm.md, "One step", eqs. 1, 3, 4, 8, and the
    coefficients of 5, 9, 10), from the reduced statistics to every scalar the step uses or commits.

    ``stats``: the all-reduced float64 vector ``[F, dot_0, L_0, dot_1, L_1, ...]`` (per group ⟨g, z - x⟩
    and L, ``ScheduleFreePlusBase._gather_statistics``); ``run``: the global run state ``(k, e, p_ref,
    p_first, num_skipped)`` before the step; ``groups``: per group ``(lr, weight_decay, y_beta, lr_max,
    weight_sum)``, the last three before the step (lr and weight_decay as the group holds them, or 0-D
    tensors). Every value is a 0-D tensor on one device or a host number; nothing is read back.

    Returns the candidate ``k`` (float64), ``ok`` (take the step), ``finite``, ``F``, ``inner``, ``l1``,
    ``e_hat``, ``status`` (an index into ``_stats.STATUSES``), ``below_floor``, the new global run state
    under its keys (``k``, ``e``, ``p_ref``, ``p_first``, ``num_skipped``: the old values where the step is
    skipped) and ``groups``: per group a dict with ``alpha``, ``beta`` (β̃_k), ``c``, ``weight_decay`` (the
    effective λ), ``coef`` (the coefficient rows, or None) and the new ``y_beta``, ``lr_max``,
    ``weight_sum``.

    A pure function of tensors and host constants, so that the fused path runs it ``torch.compile``d: one
    call instead of about a hundred small ops (each a kernel launch on a GPU). The other paths run it as
    it is, the readable definition: the operations are the ones the functions above compose, in order.
    """
    k_prev, e_prev, p_ref, p_first, num_skipped = run
    k_new = k_prev + 1
    k = k_new.to(torch.float64)  # the candidate k, in the float64 of the scalar arithmetic
    betas = [annealed_beta(k, g.sf_beta1, g.sf_beta1_max, g.sf_beta1_anneal_steps) for g in const.groups]
    F = stats[0]
    inner = sum(beta * dot for beta, dot in zip(betas, stats[1::2].unbind()))  # (2) I = Σ β̃⟨g, z - x⟩
    l1 = sum(stats[2::2].unbind())
    finite = torch.isfinite(F) & torch.isfinite(inner) & torch.isfinite(l1)
    ok = finite & (l1 != 0.0)  # an all-zero gradient is a full no-op too (k not advanced)
    e, e_hat = l1_ema_update(e_prev, l1, const.polyak_beta, k, const.polyak_scale)  # (3)
    # (4) the global Polyak factor P = numerator / denominator, with the safeguards on I and on P's growth
    numerator = polyak_numerator(F, inner, const.loss_floor, const.max_inner)
    denominator = polyak_denominator(e_hat)
    numerator = growth_bounded_numerator(numerator, denominator, p_ref, const.max_step_growth)
    numerator = ratio_bounded_numerator(numerator, denominator, p_first, const.max_step_ratio)
    out_groups = []
    for g, (lr, weight_decay, y_beta_prev, lr_max_prev, weight_sum_prev), beta in zip(const.groups, groups, betas):
        if isinstance(lr, Tensor):  # an LR scheduler's tensor lr stays on the device
            lr = lr.to(device=numerator.device, dtype=torch.float64)
        gamma = lr * warmup_factor(k, g.warmup_steps)
        alpha = gamma * numerator / denominator  # (4) α = γ·P, computed as the paper's formula
        if g.max_step is not None:
            alpha = torch.clamp(alpha, max=g.max_step)
        c, lr_max, weight_sum = averaging_weight(
            k, alpha, lr_max_prev, weight_sum_prev, g.c_warmup, g.r, g.weight_lr_power
        )  # (8)
        decay = bounded_decay_rate(alpha, weight_decay, g.bounded_decay)
        coef = None
        if g.rows is not None:  # the fused update's coefficients read β̃_{k-1}, the y_beta before this step
            beta1, beta2, eps, split = g.rows
            coef = update_coefficient_rows(
                k=k, alpha=alpha, beta=beta, beta_prev=y_beta_prev, c=c, beta1=beta1, beta2=beta2, eps=eps,
                weight_decays=(decay, 0.0) if split else (decay,), ok=ok,
            )  # fmt: skip
        out_groups.append(
            {
                "alpha": alpha,
                "beta": beta,
                "c": c,
                "weight_decay": decay,
                "coef": coef,
                "lr_max": torch.where(ok, lr_max, lr_max_prev),
                "weight_sum": torch.where(ok, weight_sum, weight_sum_prev),
                "y_beta": torch.where(ok, beta, y_beta_prev),
            }
        )
    p = numerator / denominator
    positive = ok & (numerator > 0.0)
    return {
        "k_float": k,
        "ok": ok,
        "finite": finite,
        "F": F,
        "inner": inner,
        "l1": l1,
        "e_hat": e_hat,
        "status": torch.where(finite, torch.where(ok, 0, 1), 2),  # an index into _stats.STATUSES
        "below_floor": F < const.loss_floor,
        "k": torch.where(ok, k_new, k_prev),
        "e": torch.where(ok, e, e_prev),
        "p_ref": torch.where(positive, p, p_ref),
        "p_first": torch.where(positive & (p_first == 0.0), p, p_first),
        "num_skipped": num_skipped + (~finite).to(torch.int64),
        "groups": out_groups,
    }
