"""``jax.jit(opt.update)`` traces once over many steps, makes no host callback and no implicit transfer."""

from __future__ import annotations

import numpy as np
import pytest
from jaxcases import CONFIGS, jax_data, jax_loss, jax_params, mlp_problem

import sfplus


@pytest.mark.parametrize("config", ["defaults", "every_feature"])
def test_update_compiles_once_and_stays_on_device(sj, config):
    import jax
    import jax.numpy as jnp
    import optax

    opt = sj.schedule_free_plus(**CONFIGS[config])
    problem = mlp_problem(0)
    params = jax.tree.map(lambda a: a.astype(jnp.float32), jax_params(problem))
    inputs, targets = (a.astype(jnp.float32) for a in jax_data(problem))
    state = opt.init(params)
    traces = []

    def counted_update(grads, state, params, value):
        traces.append(1)  # runs once per trace, never when the compiled function runs
        return opt.update(grads, state, params, value=value)

    update = jax.jit(counted_update)
    grad_fn = jax.jit(jax.value_and_grad(jax_loss))
    apply = jax.jit(optax.apply_updates)
    with jax.transfer_guard("disallow"):  # an implicit host<->device copy inside the loop would raise
        for _ in range(12):
            loss, grads = grad_fn(params, inputs, targets)
            updates, state = update(grads, state, params, loss)
            params = apply(params, updates)
    assert len(traces) == 1, f"traced {len(traces)} times"
    assert int(state.k) == 12 and np.isfinite(float(state.stats.alpha))

    # No callback of any kind (pure_callback, io_callback, debug.callback) in the program.
    jaxpr = jax.make_jaxpr(lambda g, s, p, v: opt.update(g, s, p, value=v))(grads, state, params, loss)
    primitives = {str(eqn.primitive) for eqn in _all_eqns(jaxpr.jaxpr)}
    assert not {p for p in primitives if "callback" in p}, primitives
    hlo = update.lower(grads, state, params, loss).as_text()
    assert "callback" not in hlo.lower()


def _all_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in eqn.params.values():
            for inner in sub if isinstance(sub, (list, tuple)) else (sub,):
                if hasattr(inner, "jaxpr"):  # ClosedJaxpr (cond branches, pjit)
                    yield from _all_eqns(inner.jaxpr)
                elif hasattr(inner, "eqns"):
                    yield from _all_eqns(inner)


def test_float32_training_matches_float64(sj):
    """The default float32 run follows the float64 one closely (scalars in float32 without x64)."""
    import jax
    from jaxcases import jax_run

    x32, alphas32, _ = jax_run(sj, mlp_problem(0), CONFIGS["every_feature"], 40)
    with jax.enable_x64(True):
        x64, alphas64, _ = jax_run(sj, mlp_problem(0), CONFIGS["every_feature"], 40)
    assert x32["W1"].dtype == np.float32 and x64["W1"].dtype == np.float64
    np.testing.assert_allclose(alphas32, alphas64, rtol=1e-3)
    np.testing.assert_allclose(x32["W1"], x64["W1"], rtol=1e-3, atol=1e-4)


def test_bfloat16_params_get_float32_state(sj):
    import jax
    import jax.numpy as jnp
    import optax

    opt = sj.schedule_free_plus(**sfplus.PAPER)
    params = {"w": jnp.linspace(-1.0, 1.0, 16, dtype=jnp.bfloat16)}
    state = opt.init(params)
    assert state.z["w"].dtype == state.m["w"].dtype == state.v["w"].dtype == jnp.float32

    def loss_fn(p):
        return jnp.mean((p["w"].astype(jnp.float32) - 0.25) ** 2)

    for _ in range(20):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
    assert params["w"].dtype == jnp.bfloat16
    x = sj.eval_params(state, params)
    assert x["w"].dtype == jnp.bfloat16
    assert float(loss_fn(x)) < float(loss_fn({"w": jnp.linspace(-1.0, 1.0, 16, dtype=jnp.bfloat16)}))
