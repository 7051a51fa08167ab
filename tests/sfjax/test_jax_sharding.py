"""Sharded training equals one device: F, I and L are global under ``jit`` with a device mesh.

The conftest gives XLA 4 virtual CPU devices. The batch is split over a 1-D mesh of 2 or 4 of them, and so
are the parameters (W1 and b1 by rows, W2 by columns; b2 and the zero-size tensor replicated). 40 float64
steps with every feature on, and with the defaults, must equal the same steps on one device to 1e-9:
a sum that missed a shard, or counted a replicated tensor twice, would be off by far more.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NUM_DEVICES
from jaxcases import CONFIGS, jax_data, jax_loss, jax_params, jax_run, max_rel_err, mlp_problem

STEPS = 40
#: How each parameter is laid out on the mesh axis "data" (None: replicated along that dimension).
LAYOUT = {"W1": ("data", None), "b1": ("data",), "empty": (None,), "W2": (None, "data"), "b2": (None,)}


def _sharded_run(sj, kwargs, n):
    import jax
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    if len(devices) < n:
        pytest.fail(f"needs {n} devices, XLA has {len(devices)}: XLA_FLAGS was set after jax started")
    mesh = Mesh(np.array(devices[:n]), ("data",))
    problem = mlp_problem(0)
    shardings = {name: NamedSharding(mesh, PartitionSpec(*spec)) for name, spec in LAYOUT.items()}
    params = {name: jax.device_put(p, shardings[name]) for name, p in jax_params(problem).items()}
    batch = NamedSharding(mesh, PartitionSpec("data", None))
    inputs, targets = (jax.device_put(a, batch) for a in jax_data(problem))
    opt = sj.schedule_free_plus(**kwargs)
    state = opt.init(params)
    assert state.z["W1"].sharding.is_equivalent_to(shardings["W1"], 2), "z does not follow the params' layout"

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(jax_loss)(params, inputs, targets)  # the mean over the whole batch
        updates, state = opt.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    alphas = []
    for _ in range(STEPS):
        params, state = step(params, state)
        alphas.append(float(state.stats.alpha))
    assert params["W1"].sharding.is_equivalent_to(shardings["W1"], 2)
    assert len(params["W1"].addressable_shards) == n
    return {name: np.asarray(v) for name, v in sj.eval_params(state, params).items()}, alphas


@pytest.mark.parametrize("n", [2, NUM_DEVICES])
@pytest.mark.parametrize("config", ["every_feature", "defaults"])
def test_sharded_equals_one_device(sj, x64, config, n):
    x_one, alphas_one, _ = jax_run(sj, mlp_problem(0), CONFIGS[config], STEPS)
    x_mesh, alphas_mesh = _sharded_run(sj, CONFIGS[config], n)
    assert max_rel_err(x_mesh, x_one) <= 1e-9
    np.testing.assert_allclose(alphas_mesh, alphas_one, rtol=1e-9)
