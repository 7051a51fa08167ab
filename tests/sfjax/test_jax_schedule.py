"""The jnp formulas in sfplus.jax equal the shared pure-Python schedule (sfplus._step_size), in float64."""

from __future__ import annotations

import itertools

import pytest

from sfplus import _step_size as S

KS = [1, 2, 3, 5, 10, 99, 100, 101, 1000, 5000]
RTOL = 1e-13


def _close(a, b):
    return float(a) == pytest.approx(b, rel=RTOL, abs=1e-300)


@pytest.mark.parametrize("anneal_steps", [0, 1, 6, 1000])
def test_annealed_beta(sj, x64, anneal_steps):
    for k, (b0, b1) in itertools.product(KS + [0], [(0.9, 0.965), (0.5, 0.5), (0.8, 0.99)]):
        assert _close(sj.annealed_beta(k, b0, b1, anneal_steps), S.annealed_beta(k, b0, b1, anneal_steps))


def test_l1_ema_update(sj, x64):
    for k, beta, e_prev, l1 in itertools.product(KS, [0.0, 0.5, 0.9, 0.999], [0.0, 3.7], [0.0, 1e-8, 12.5]):
        e, e_hat = sj.l1_ema_update(e_prev, l1, beta, k)
        e_py, e_hat_py = S.l1_ema_update(e_prev, l1, beta, k)
        assert _close(e, e_py) and _close(e_hat, e_hat_py)


def test_numerator_and_its_bounds(sj, x64):
    import jax.numpy as jnp

    values = [-2.0, -0.1, 0.0, 0.3, 4.0]
    for loss, inner, floor in itertools.product([0.0, 0.5, 3.0], values, [0.0, 1.0]):
        for kappa in [None, 0.0, 0.5]:
            got = sj.polyak_numerator(jnp.asarray(loss), jnp.asarray(inner), floor, kappa)
            assert _close(got, S.polyak_numerator(loss, inner, floor, kappa))
    for num, den, ref, bound in itertools.product([0.0, 0.2, 5.0], [1e-30, 0.7], [0.0, 0.1, 3.0], [None, 0.0, 0.05, 1]):
        n, d, r = jnp.asarray(num), jnp.asarray(den), jnp.asarray(ref)
        assert _close(sj.growth_bounded_numerator(n, d, r, bound), S.growth_bounded_numerator(num, den, ref, bound))
        assert _close(sj.ratio_bounded_numerator(n, d, r, bound), S.ratio_bounded_numerator(num, den, ref, bound))


def test_decay_and_warmup(sj, x64):
    import jax.numpy as jnp

    for alpha, wd, bounded in itertools.product([0.0, 0.01, 0.5, 3.0], [0.0, 10.0, 50.0], [False, True]):
        assert _close(sj.bounded_decay_rate(jnp.asarray(alpha), wd, bounded), S.bounded_decay_rate(alpha, wd, bounded))
    for k, warmup in itertools.product(KS, [0, 1, 3, 50, 1000]):
        assert _close(sj.warmup_factor(k, warmup), S.warmup_factor(k, warmup))


def test_averaging_weight(sj, x64):
    import jax.numpy as jnp

    grid = itertools.product(KS, [0.0, 1e-3, 0.4], [1e-8, 0.2], [0.0, 2.5], [0, 3, 100], [0.0, 1.0], [1.0, 2.0])
    for k, alpha, lr_max, wsum, c_warmup, r, power in grid:
        got = sj.averaging_weight(jnp.asarray(float(k)), jnp.asarray(alpha), jnp.asarray(lr_max), jnp.asarray(wsum),
                                  c_warmup, r, power)  # fmt: skip
        want = S.averaging_weight(k, alpha, lr_max, wsum, c_warmup, r, power)
        assert all(_close(g, w) for g, w in zip(got, want)), (k, alpha, lr_max, wsum, c_warmup, r, power)


def test_weight_sum_zero_gives_c_zero(sj, x64):
    import jax.numpy as jnp

    c, _, W = sj.averaging_weight(jnp.asarray(5.0), jnp.asarray(0.0), jnp.asarray(0.0), jnp.asarray(0.0), 0, 0.0, 2.0)
    assert float(c) == 0.0 == S.averaging_weight(5, 0.0, 0.0, 0.0, 0, 0.0, 2.0)[0] and float(W) == 0.0


def test_shared_constants(sj):
    """The floor of the denominator and sqrt(π/2) are the Python module's own objects, not copies."""
    assert sj.TINY is S.TINY and sj.SQRT_HALF_PI is S.SQRT_HALF_PI
