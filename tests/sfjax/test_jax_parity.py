"""The JAX transformation equals the PyTorch class: float64 trajectories, every table case, the policies.

Each run trains the table's MLP (tests/cases.py, all parameters in one group, a zero-size one included)
for 40 steps with ``sfplus.ScheduleFreePlus`` and with ``sfplus.jax.schedule_free_plus`` (jitted), and
compares the average x at the end, and α at every step, to 1e-9 relative.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from cases import OPTIMIZER_CASES, case_params
from jaxcases import CONFIGS, jax_data, jax_loss, jax_params, jax_run, max_rel_err, mlp_problem, torch_run

import sfplus

STEPS = 40
RTOL = 1e-9


def _assert_same_run(sj, kwargs, seed=0, steps=STEPS, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the advisory lr / weight_decay warnings
        x_t, alphas_t, opt = torch_run(mlp_problem(seed), kwargs, steps)
        x_j, alphas_j, state = jax_run(sj, mlp_problem(seed), kwargs, steps, **extra)
    assert all(math.isfinite(a) for a in alphas_t), alphas_t
    assert max(alphas_t) > 0.0
    err = max_rel_err(x_j, x_t)
    assert err <= RTOL, f"x differs: max relative error {err:.3g}"
    np.testing.assert_allclose(alphas_j, alphas_t, rtol=RTOL, atol=1e-300)
    group = opt.param_groups[0]
    assert int(state.k) == group["k"] == steps
    for key in ("e", "p_ref", "p_first", "y_beta", "lr_max", "weight_sum"):
        np.testing.assert_allclose(float(getattr(state, key)), group[key], rtol=RTOL, err_msg=key)
    return alphas_t


@pytest.mark.parametrize("config", list(CONFIGS))
def test_trajectory_equals_pytorch(sj, x64, config):
    """The issue's three: the paper's update, the library's defaults, every feature (and safeguard) on."""
    _assert_same_run(sj, CONFIGS[config])


def test_every_feature_run_exercises_the_safeguards(sj, x64):
    """The every-feature run is a real test of the safeguards: the growth bound and the cap bind."""
    alphas = _assert_same_run(sj, CONFIGS["every_feature"])
    assert max(alphas) == pytest.approx(0.05), "the cap max_step never bound"
    rising = [b / a for a, b in zip(alphas[3:], alphas[4:]) if a > 0]  # after the warmup ramp
    assert max(rising) <= 1.05 + 1e-12


@pytest.mark.parametrize("case", case_params(OPTIMIZER_CASES))
def test_case_table_equals_pytorch(sj, x64, case):
    """Every case of the PyTorch tests' table (through sfplus.PAPER, as there)."""
    _assert_same_run(sj, {**sfplus.PAPER, **case.kwargs}, seed=1)


def test_lr_schedule_equals_a_torch_scheduler(sj, x64):
    """An optax schedule for ``lr`` does what a PyTorch LR scheduler changing the group's lr does."""
    import torch

    schedule = lambda count: 1.0 / (1.0 + 0.1 * count)  # noqa: E731
    problem = mlp_problem(2)
    opt = sfplus.ScheduleFreePlus(list(problem.params.values()), **sfplus.PAPER, polyak_beta=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    closure = problem.closure_for(opt)
    for _ in range(20):
        opt.step(closure)
        sched.step()
    opt.eval()
    x_t = {name: p.detach().numpy() for name, p in problem.params.items()}
    x_j, _, _ = jax_run(sj, mlp_problem(2), {**sfplus.PAPER, "polyak_beta": 0.9, "lr": schedule}, 20)
    assert max_rel_err(x_j, x_t) <= RTOL


def test_weight_decay_mask_equals_a_group_without_decay(sj, x64):
    """``weight_decay_mask`` False on the biases equals PyTorch param groups with weight_decay=0 there."""
    kwargs = dict(CONFIGS["every_feature"])
    problem = mlp_problem(3)
    p = problem.params
    groups = [{"params": [p["W1"], p["W2"]]}, {"params": [p["b1"], p["b2"], p["empty"]], "weight_decay": 0.0}]
    x_t, alphas_t, _ = torch_run(problem, kwargs, STEPS, groups=groups)
    mask = lambda params: {name: name.startswith("W") for name in params}  # noqa: E731
    x_j, alphas_j, _ = jax_run(sj, mlp_problem(3), kwargs, STEPS, weight_decay_mask=mask)
    assert max_rel_err(x_j, x_t) <= RTOL
    np.testing.assert_allclose(alphas_j, alphas_t, rtol=RTOL)


# ------------------------------------------------------------------------------------------ policies
def _setup(sj, kwargs, seed=4):
    import jax

    opt = sj.schedule_free_plus(**kwargs)
    problem = mlp_problem(seed)
    params = jax_params(problem)
    inputs, targets = jax_data(problem)
    grad_fn = jax.jit(jax.value_and_grad(jax_loss))
    return opt, params, opt.init(params), lambda prm: grad_fn(prm, inputs, targets), jax.jit(opt.update)


def _apply(params, updates):
    import optax

    return optax.apply_updates(params, updates)


def _leaves_equal(a, b):
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(la, lb))


def _core(state):
    """Everything in the state that the update reads (the logging stats aside)."""
    return state._replace(stats=None, num_skipped=None)


@pytest.mark.parametrize("bad", ["loss_nan", "loss_inf", "grad_nan"])
def test_nonfinite_step_changes_nothing(sj, x64, bad):
    """A NaN/inf loss or gradient: params and every state entry unchanged, num_skipped + 1, and the next
    finite step equals a run that never saw the bad one."""
    import jax
    import jax.numpy as jnp

    opt, params, state, grads_at, update = _setup(sj, CONFIGS["every_feature"])
    for _ in range(5):
        loss, grads = grads_at(params)
        updates, state = update(grads, state, params, value=loss)
        params = _apply(params, updates)
    loss, grads = grads_at(params)
    if bad == "loss_nan":
        bad_loss, bad_grads = jnp.nan, grads
    elif bad == "loss_inf":
        bad_loss, bad_grads = jnp.inf, grads
    else:
        bad_loss, bad_grads = loss, jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan) if g.size else g, grads)
    updates, skipped = update(bad_grads, state, params, value=bad_loss)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    assert _leaves_equal(_core(skipped), _core(state))
    assert int(skipped.num_skipped) == int(state.num_skipped) + 1
    assert int(skipped.stats.status) == sj.STATUS_SKIPPED_NONFINITE
    after_skip, s1 = update(grads, skipped, params, value=loss)
    clean, s2 = update(grads, state, params, value=loss)
    assert _leaves_equal(after_skip, clean) and _leaves_equal(_core(s1), _core(s2))


def test_all_zero_gradient_is_a_no_op(sj, x64):
    import jax
    import jax.numpy as jnp

    opt, params, state, grads_at, update = _setup(sj, CONFIGS["every_feature"])
    for _ in range(4):
        loss, grads = grads_at(params)
        updates, state = update(grads, state, params, value=loss)
        params = _apply(params, updates)
    zeros = jax.tree.map(jnp.zeros_like, grads)
    updates, after = update(zeros, state, params, value=jnp.asarray(1.0))
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    assert _leaves_equal(after._replace(stats=None), state._replace(stats=None))
    assert int(after.stats.status) == sj.STATUS_ZERO_GRAD and int(after.k) == 4


def test_negative_numerator_takes_a_zero_step(sj, x64):
    """F - f* + I < 0: α = 0, z stays, m, v, k and the averaging advance (as the PyTorch class)."""
    opt, params, state, grads_at, update = _setup(sj, {**sfplus.PAPER, "loss_floor": 100.0})
    loss, grads = grads_at(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the torch class warns once about the floor
        problem = mlp_problem(4)
        x_t, alphas_t, opt_t = torch_run(problem, {**sfplus.PAPER, "loss_floor": 100.0}, 1)
    updates, after = update(grads, state, params, value=loss)
    assert float(after.stats.alpha) == 0.0 == alphas_t[0]
    assert int(after.k) == 1
    assert _leaves_equal(after.z, state.z)
    assert not _leaves_equal(after.m, state.m) and not _leaves_equal(after.v, state.v)


def test_eval_params_is_x_of_the_reference(sj, x64):
    """eval_params gives the reference class's explicit x (not only the fast class's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        problem = mlp_problem(5)
        opt = sfplus.ScheduleFreePlusReference(list(problem.params.values()), **CONFIGS["every_feature"])
        closure = problem.closure_for(opt)
        for _ in range(STEPS):
            opt.step(closure)
        x_ref = {name: opt.state[p]["x"].numpy() for name, p in problem.params.items()}
        x_j, _, _ = jax_run(sj, mlp_problem(5), CONFIGS["every_feature"], STEPS)
    assert max_rel_err(x_j, x_ref) <= RTOL
