"""The scalar math (``sfplus._step_size``) against sequences written out by hand in float64.

Each expected value is computed a different way from the library (closed forms instead of recursions),
so a shared mistake is unlikely. The optimizer-level tests at the bottom check that what is *stored*
is the raw L1 EMA: the public reference code stores the bias-corrected copy and corrects it again
every step, which makes the Polyak denominator about 1,000× too large by step 10.
"""

from __future__ import annotations

import math

import pytest
import torch
from cases import CLASSES
from hypothesis import given, settings
from hypothesis import strategies as st

from sfplus import _step_size as S

SQRT_HALF_PI = math.sqrt(math.pi) / math.sqrt(2.0)
L1_NORMS = [4.0, 2.5, 3.0, 0.5, 1.25]  # ‖g_k‖₁ for k = 1..5


@pytest.mark.parametrize("polyak_beta", [0.0, 0.9])
def test_l1_ema_five_steps_closed_form(polyak_beta):
    e = 0.0
    for k in range(1, 6):
        e, e_hat = S.l1_ema_update(e, L1_NORMS[k - 1], polyak_beta, k)
        # Closed form of the raw EMA: e_k = (1-β) √(π/2) Σ_j β^(k-j) L_j; ê_k = e_k / (1 - β^k).
        raw = (1 - polyak_beta) * SQRT_HALF_PI * sum(polyak_beta ** (k - j) * L1_NORMS[j - 1] for j in range(1, k + 1))
        assert e == pytest.approx(raw, rel=1e-14)
        assert e_hat == pytest.approx(raw / (1 - polyak_beta**k), rel=1e-14)
    if polyak_beta == 0.0:
        assert e_hat == pytest.approx(SQRT_HALF_PI * 1.25, rel=1e-15)  # no memory: the last norm


def test_l1_ema_literal_values():
    """β_p = 0.9, L = 4 then 2.5: e_1 = 0.1·√(π/2)·4, ê_1 = √(π/2)·4; e_2 = 0.9e_1 + 0.1·√(π/2)·2.5."""
    e1, h1 = S.l1_ema_update(0.0, 4.0, 0.9, 1)
    assert e1 == pytest.approx(0.5013256549262001, rel=1e-14)
    assert h1 == pytest.approx(5.013256549262001, rel=1e-14)
    e2, h2 = S.l1_ema_update(e1, 2.5, 0.9, 2)
    assert e2 == pytest.approx(0.7645216237624552, rel=1e-14)
    assert h2 == pytest.approx(0.7645216237624552 / 0.19, rel=1e-14)


def test_double_correction_would_be_caught():
    """Feeding ê back as the previous e (the public code's bug) gives a different, growing sequence."""
    e, e_bug = 0.0, 0.0
    for k in range(1, 6):
        e, e_hat = S.l1_ema_update(e, 1.0, 0.9, k)
        _, e_bug = S.l1_ema_update(e_bug, 1.0, 0.9, k)
    assert e_hat == pytest.approx(SQRT_HALF_PI, rel=1e-14)  # a constant norm gives a constant ê
    assert e_bug > 2.5 * e_hat


def test_polyak_step_cases():
    # α = γ · max(0, F - f* + I) / max(ê, tiny), then the cap.
    assert S.polyak_step(2.0, 0.5, 1.25, 1.0, 0.0, None) == pytest.approx(2.0)
    assert S.polyak_step(2.0, 0.5, 1.25, 0.5, 0.5, None) == pytest.approx(0.8)
    assert S.polyak_step(2.0, -3.0, 1.25, 1.0, 0.0, None) == 0.0  # negative numerator: α = 0, not < 0
    assert S.polyak_step(2.0, 0.5, 1.25, 1.0, 0.0, 0.1) == 0.1  # capped
    assert S.polyak_step(0.0, 0.0, 0.0, 1.0, 0.0, None) == 0.0  # 0/tiny, not 0/0
    assert math.isfinite(S.polyak_step(1.0, 0.0, 0.0, 1.0, 0.0, None))  # ê = 0 hits the floor, no ZeroDivisionError
    assert S.polyak_step(1.0, 0.0, 1.0, 0.0, 0.0, None) == 0.0  # γ = 0 (warmup from 0)


def test_warmup_factor():
    assert [S.warmup_factor(k, 4) for k in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert S.warmup_factor(1, 0) == 1.0


@pytest.mark.parametrize("r, power", [(0.0, 2.0), (1.0, 2.0), (1.0, 1.0)])
def test_averaging_weight_five_steps(r, power):
    alphas = [0.3, 0.7, 0.5, 0.9, 0.2]
    c_warmup, eps = 2, 1e-8
    lr_max, weight_sum = eps, 0.0
    for k in range(1, 6):
        c, lr_max, weight_sum = S.averaging_weight(k, alphas[k - 1], lr_max, weight_sum, c_warmup, r, power)
        gmax = [max(alphas[:j]) for j in range(1, k + 1)]  # γmax_j, a running max
        assert lr_max == gmax[-1]
        if k <= c_warmup:
            assert c == 1.0 and weight_sum == 0.0  # warm start: x follows z, W not started
        else:
            weights = [j**r * gmax[j - 1] ** power for j in range(c_warmup + 1, k + 1)]
            assert weight_sum == pytest.approx(sum(weights), rel=1e-14)
            assert c == pytest.approx(weights[-1] / sum(weights), rel=1e-14)
            if k == c_warmup + 1:
                assert c == 1.0  # the first averaged step has c = w / w


def test_averaging_weight_zero_sum_is_zero_not_nan():
    # weight_lr_power > 0 with γmax = 0 gives w = 0: c must be 0 (the average stays), not 0/0.
    c, lr_max, weight_sum = S.averaging_weight(1, 0.0, 0.0, 0.0, 0, 0.0, 2.0)
    assert (c, lr_max, weight_sum) == (0.0, 0.0, 0.0)


def test_annealed_beta_log_space():
    b0, bmax, T = 0.8, 0.965, 4
    for k in range(0, 7):
        p = min(k / T, 1.0)
        expected = 1 - (1 - b0) ** (1 - p) * (1 - bmax) ** p  # geometric interpolation of 1-β
        assert S.annealed_beta(k, b0, bmax, T) == pytest.approx(expected, rel=1e-14)
    assert S.annealed_beta(2, b0, bmax, 4) == pytest.approx(1 - math.sqrt(0.2 * 0.035), rel=1e-14)
    assert S.annealed_beta(9, b0, bmax, 0) == b0  # no annealing


# ------------------------------------------------------------------- what the optimizer stores
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("polyak_beta", [0.0, 0.9])
def test_optimizer_stores_raw_ema(cls, polyak_beta, gen):
    """Five steps on a quadratic: group["e"] is the raw EMA of √(π/2)‖g‖₁ and stats["e_hat"] its correction."""
    w = torch.nn.Parameter(torch.randn(6, generator=gen, dtype=torch.float64))
    opt = cls([w], polyak_beta=polyak_beta)
    norms = []
    for k in range(1, 6):
        opt.zero_grad()
        loss = 0.5 * (w**2).sum()
        loss.backward()
        norms.append(w.grad.abs().sum().item())
        opt.step(loss=loss)
        raw = (1 - polyak_beta) * SQRT_HALF_PI * sum(polyak_beta ** (k - j) * norms[j - 1] for j in range(1, k + 1))
        assert opt.param_groups[0]["e"] == pytest.approx(raw, rel=1e-12)
        assert opt.stats["e_hat"] == pytest.approx(raw / (1 - polyak_beta**k), rel=1e-12)
        assert opt.stats["l1"] == pytest.approx(norms[-1], rel=1e-12)
        # α from the logged scalars: γ (F + I) / ê.
        expected_alpha = max(0.0, opt.stats["loss"] + opt.stats["inner"]) / opt.stats["e_hat"]
        assert opt.stats["alpha"] == pytest.approx(expected_alpha, rel=1e-12)


# ------------------------------------------------------------------- properties over random inputs
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
nonneg = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(loss=nonneg, inner=finite, e_hat=nonneg, gamma=nonneg, floor=finite, cap=st.none() | st.floats(1e-6, 10.0))
def test_polyak_step_is_never_negative_nan_or_above_the_cap(loss, inner, e_hat, gamma, floor, cap):
    alpha = S.polyak_step(loss, inner, e_hat, gamma, floor, cap)
    assert alpha >= 0.0 and not math.isnan(alpha)
    if cap is not None:
        assert alpha <= cap


@settings(max_examples=100, deadline=None, derandomize=True)
@given(norms=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=12), polyak_beta=st.floats(0.0, 0.99))
def test_corrected_ema_lies_between_the_smallest_and_largest_input(norms, polyak_beta):
    """ê_k is a convex combination of √(π/2)·L_1..L_k: the double-corrected bug leaves this range."""
    e = 0.0
    for k, l1 in enumerate(norms, start=1):
        e, e_hat = S.l1_ema_update(e, l1, polyak_beta, k)
    low, high = SQRT_HALF_PI * min(norms), SQRT_HALF_PI * max(norms)
    assert low * (1 - 1e-9) <= e_hat <= high * (1 + 1e-9)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    alphas=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=12),
    c_warmup=st.integers(0, 5),
    r=st.floats(0.0, 3.0),
    power=st.floats(0.0, 3.0),
)
def test_averaging_weight_stays_in_unit_interval(alphas, c_warmup, r, power):
    lr_max, weight_sum = 1e-8, 0.0
    for k, alpha in enumerate(alphas, start=1):
        c, lr_max, weight_sum = S.averaging_weight(k, alpha, lr_max, weight_sum, c_warmup, r, power)
        assert 0.0 <= c <= 1.0 and lr_max >= alpha


@settings(max_examples=100, deadline=None, derandomize=True)
@given(k=st.integers(0, 10_000), low=st.floats(0.01, 0.98), span=st.floats(0.0, 1.0), steps=st.integers(0, 5000))
def test_annealed_beta_moves_monotonically_between_its_ends(k, low, span, steps):
    high = low + span * (0.999 - low)
    beta = S.annealed_beta(k, low, high, steps)
    assert low - 1e-12 <= beta <= high + 1e-12
    if steps:
        assert S.annealed_beta(k + 1, low, high, steps) >= beta - 1e-15


def test_the_tensor_schedule_equals_the_float_functions():
    """``sfplus._schedule`` (0-D float64 tensors, what step() runs, no host sync) against the float functions
    of ``sfplus._step_size`` on a grid: the same operations in the same order, so equal to the last bit up
    to the rounding of ``pow`` (torch's x*x for x**2 against libm's pow), 1e-15 relative."""
    import itertools

    from sfplus import _schedule as T
    from sfplus import _step_size as P

    def t(x):
        return torch.tensor(x, dtype=torch.float64)

    def same(a, b):
        a = float(a)
        return a == b or math.isclose(a, b, rel_tol=1e-15)

    for k in (1, 2, 7, 50, 999, 1000, 5000):
        assert same(T.annealed_beta(t(k), 0.8, 0.965, 1000), P.annealed_beta(k, 0.8, 0.965, 1000))
        assert same(T.warmup_factor(t(k), 50), P.warmup_factor(k, 50))
        for e_prev, l1, pb in itertools.product((0.0, 1.5), (0.3, 20.0), (0.0, 0.9)):
            for a, b in zip(T.l1_ema_update(t(e_prev), t(l1), pb, t(k)), P.l1_ema_update(e_prev, l1, pb, k)):
                assert same(a, b)
        for alpha, lr_max, ws, cw, r in itertools.product(
            (0.0, 0.01, 0.3), (1e-8, 0.1), (0.0, 2.5), (0, 3), (0.0, 1.0)
        ):
            got = T.averaging_weight(t(k), t(alpha), t(lr_max), t(ws), cw, r, 2.0)
            want = P.averaging_weight(k, alpha, lr_max, ws, cw, r, 2.0)
            assert all(same(a, b) for a, b in zip(got, want)), (k, alpha, lr_max, ws, cw, r)
    for F, inner, floor, kappa in itertools.product(
        (-1.0, 0.0, 0.7, 3.0), (-0.5, 0.0, 0.4), (0.0, 0.5), (None, 0.0, 1.0)
    ):
        assert same(T.polyak_numerator(t(F), t(inner), floor, kappa), P.polyak_numerator(F, inner, floor, kappa))
    for num, den, ref, bound in itertools.product(
        (0.0, 0.2, 5.0), (1e-3, 1.0), (0.0, 0.1, 2.0), (None, 0.0, 0.05, 1.0)
    ):
        assert same(
            T.growth_bounded_numerator(t(num), t(den), t(ref), bound), P.growth_bounded_numerator(num, den, ref, bound)
        )
        assert same(
            T.ratio_bounded_numerator(t(num), t(den), t(ref), bound), P.ratio_bounded_numerator(num, den, ref, bound)
        )
    for alpha, wd, bounded in itertools.product((0.0, 0.01, 2.0), (0.0, 10.0), (False, True)):
        assert same(T.bounded_decay_rate(t(alpha), wd, bounded), P.bounded_decay_rate(alpha, wd, bounded))
