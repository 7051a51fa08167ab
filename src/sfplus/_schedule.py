"""The scalar schedule of ``_step_size.py`` on 0-D float64 tensors, without a host synchronisation.

Each function here is the tensor twin of the float function of the same name in ``_step_size.py``, the
same operations in the same order, so on CPU the two agree bit for bit (``tests/optim/test_step_size.py``
checks it on a grid). A branch on a hyperparameter (a Python value fixed at construction) stays a Python
``if``; a branch on a value that the step computes (k, p_ref, the weight sum, ...) is a ``torch.where``,
so nothing here ever reads a device value back to the host.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._step_size import SQRT_HALF_PI, TINY

__all__ = [
    "annealed_beta",
    "averaging_weight",
    "bounded_decay_rate",
    "growth_bounded_numerator",
    "l1_ema_update",
    "polyak_numerator",
    "ratio_bounded_numerator",
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
