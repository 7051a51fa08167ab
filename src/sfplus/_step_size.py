"""Pure scalar functions of ScheduleFree+: the math that makes it learning-rate-free.

Every function here takes and returns Python floats, so each can be unit-tested in float64 against
hand-computed sequences. Equation numbers refer to ``docs/algorithm.md`` (ALGORITHM.md in the spec).
"""

from __future__ import annotations

import math

__all__ = [
    "TINY",
    "annealed_beta",
    "l1_ema_update",
    "polyak_step",
    "warmup_factor",
    "averaging_weight",
]

#: Floor for the Polyak denominator (eq. 4): ``max(ê, TINY)``.
TINY = 1e-30

#: sqrt(π/2): E|g| = sqrt(2/π)·σ for Gaussian g, so sqrt(π/2)·‖g‖₁ estimates Σ g²/σ (eq. 3).
SQRT_HALF_PI = math.sqrt(math.pi / 2.0)


def annealed_beta(k: int, sf_beta1: float, sf_beta1_max: float, anneal_steps: int) -> float:
    """β̃_k, interpolated in log(1-β) from ``sf_beta1`` to ``sf_beta1_max`` over ``anneal_steps`` (eq. 1)."""
    if anneal_steps == 0:
        return sf_beta1
    p = min(k / anneal_steps, 1.0)
    return 1.0 - math.exp((1.0 - p) * math.log1p(-sf_beta1) + p * math.log1p(-sf_beta1_max))


def l1_ema_update(e_prev: float, l1: float, polyak_beta: float, k: int) -> tuple[float, float]:
    """Eq. 3: returns ``(e_k, ê_k)``. Store the raw ``e_k``; only use the bias-corrected ``ê_k``.

    Storing ``ê_k`` back (the public reference code's bug) corrects it again every step.
    """
    e = polyak_beta * e_prev + (1.0 - polyak_beta) * SQRT_HALF_PI * l1
    e_hat = e / (1.0 - polyak_beta**k)
    return e, e_hat


def polyak_step(
    loss: float, inner: float, e_hat: float, gamma: float, loss_floor: float, max_step: float | None
) -> float:
    """Eq. 4: ``α = min(γ · max(0, F - f* + I) / max(ê, tiny), α_cap)``; never negative, never NaN.

    Callers reject a non-finite ``loss``/``inner``/``e_hat`` before calling (``max(0, nan)`` is 0 in
    Python, which would silently turn a NaN loss into a zero step).
    """
    numerator = max(0.0, loss - loss_floor + inner)
    alpha = gamma * numerator / max(e_hat, TINY)
    return alpha if max_step is None else min(alpha, max_step)


def warmup_factor(k: int, warmup_steps: int) -> float:
    """Linear ramp ``min(1, k / warmup_steps)`` of γ; 1 when ``warmup_steps == 0``."""
    return 1.0 if warmup_steps == 0 else min(1.0, k / warmup_steps)


def averaging_weight(
    k: int, alpha: float, lr_max_prev: float, weight_sum_prev: float, c_warmup: int, r: float, weight_lr_power: float
) -> tuple[float, float, float]:
    """Eq. 8: returns ``(c_k, γmax_k, W_k)``.

    During the warm start (``k <= c_warmup``) ``c_k = 1`` and ``W`` stays 0, so the first averaged
    step has ``c = w / w = 1``. Should ``W_k`` be 0 (every weight 0, e.g. α = 0 throughout), ``c_k = 0``
    rather than 0/0: the average does not move.
    """
    lr_max = max(lr_max_prev, alpha)
    if k <= c_warmup:
        return 1.0, lr_max, weight_sum_prev
    w = (k**r) * (lr_max**weight_lr_power)
    weight_sum = weight_sum_prev + w
    c = w / weight_sum if weight_sum > 0.0 else 0.0
    return c, lr_max, weight_sum
