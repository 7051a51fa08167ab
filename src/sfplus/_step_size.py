"""Pure scalar functions of ScheduleFree+: the math that makes it learning-rate-free.

Every function here takes and returns Python floats, so each can be unit-tested in float64 against
hand-computed sequences. Equation numbers refer to ``docs/algorithm.md`` ("One step").
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
    "polyak_numerator",
    "growth_bounded_numerator",
    "bounded_decay_rate",
    "ratio_bounded_numerator",
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


def l1_ema_update(
    e_prev: float, l1: float, polyak_beta: float, k: int, scale: float = SQRT_HALF_PI
) -> tuple[float, float]:
    """Eq. 3: returns ``(e_k, ê_k)``. Store the raw ``e_k``; only use the bias-corrected ``ê_k``.

    ``l1`` is L, the base step's Polyak statistic summed over tensors, and ``scale`` its factor (√(π/2) for
    Adam's ‖g‖₁: ``sfplus._inner_step``).

    Storing ``ê_k`` back (the public reference code's bug) corrects it again every step.
    """
    e = polyak_beta * e_prev + (1.0 - polyak_beta) * scale * l1
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


def polyak_numerator(loss: float, inner: float, loss_floor: float, max_inner: float | None) -> float:
    """The numerator of eq. 4, ``max(0, F - f* + I)``, with the safeguard ``max_inner`` (κ) on I.

    With κ set, I enters as ``min(I, κ·max(F - f*, 0))``: I can lower the step as in the paper, but
    raise it by at most κ times the loss gap. κ = 0 lets I only lower it. None (the paper) leaves I alone.
    Why: I = β̃⟨g, z - x⟩ grows when a large step has moved z away from x, which raises α, which moves z
    further (docs/algorithm.md, "Known behaviour").
    """
    gap = loss - loss_floor
    if max_inner is not None:
        inner = min(inner, max_inner * max(gap, 0.0))
    return max(0.0, gap + inner)


def growth_bounded_numerator(
    numerator: float, denominator: float, p_ref: float, max_step_growth: float | None
) -> float:
    """The safeguard ``max_step_growth`` (ρ): the Polyak factor P = numerator/denominator may grow by at
    most a factor 1 + ρ per step over ``p_ref``, the last positive P taken. Returns the (possibly lowered)
    numerator, so that α is computed the same way with and without the bound.

    No bound before the first positive step (``p_ref == 0``) or when ρ is None (the paper).
    """
    if max_step_growth is None or p_ref <= 0.0:
        return numerator
    return min(numerator, (1.0 + max_step_growth) * p_ref * denominator)


def ratio_bounded_numerator(
    numerator: float, denominator: float, p_first: float, max_step_ratio: float | None
) -> float:
    """The safeguard ``max_step_ratio`` (R): the Polyak factor P never exceeds R times ``p_first``, the first
    positive P of the run. Returns the (possibly lowered) numerator. No bound before that first step or when
    R is None (the paper)."""
    if max_step_ratio is None or p_first <= 0.0:
        return numerator
    return min(numerator, max_step_ratio * p_first * denominator)


def bounded_decay_rate(alpha: float, weight_decay: float, bounded: bool) -> float:
    """The effective λ of eq. 5. Unbounded (the paper): λ, so z loses α²λ·y. Bounded: λ/(1 + α²λ), so z
    loses α²λ/(1 + α²λ) < 1 of y, the implicit (proximal) form of the same decay: equal to first order
    for small α²λ, and never more than all of y however large α gets."""
    if not bounded:
        return weight_decay
    return weight_decay / (1.0 + alpha * alpha * weight_decay)


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
