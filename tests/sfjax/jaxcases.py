"""Helpers for the JAX tests: the table's MLP problem in JAX, and one trajectory in each framework.

jax is imported inside the functions, so that importing this module never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from cases import ALL_FEATURES, MLPProblem

import sfplus

#: Every feature on, the safeguards too: ALL_FEATURES (warmup, annealing, AdamC decay, the L1 EMA, the warm
#: start, r = 1) with a cap, a loss floor and the four safeguards at values that bind on this problem.
EVERY_FEATURE: dict[str, Any] = dict(
    ALL_FEATURES,
    max_step=0.05,
    loss_floor=1e-3,
    max_inner=0.5,
    max_step_growth=0.05,
    max_step_ratio=1.0,
    bounded_decay=True,
)

#: The three configurations the issue names: the paper's update, the library's defaults, every feature on.
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": dict(sfplus.PAPER),
    "defaults": {},
    "every_feature": EVERY_FEATURE,
}


def mlp_problem(seed: int) -> MLPProblem:
    return MLPProblem.make(torch.Generator().manual_seed(seed))


def jax_params(problem: MLPProblem) -> dict[str, Any]:
    import jax.numpy as jnp

    return {name: jnp.asarray(p.detach().numpy()) for name, p in problem.params.items()}


def jax_data(problem: MLPProblem) -> tuple[Any, Any]:
    import jax.numpy as jnp

    return jnp.asarray(problem.inputs.numpy()), jnp.asarray(problem.targets.numpy())


def jax_loss(params: dict[str, Any], inputs: Any, targets: Any) -> Any:
    """``MLPProblem.loss`` in JAX."""
    import jax.numpy as jnp

    hidden = jnp.tanh(inputs @ params["W1"].T + params["b1"])
    out = hidden @ params["W2"].T + params["b2"]
    return jnp.mean((out - targets) ** 2) + jnp.sum(params["empty"])


def torch_run(problem: MLPProblem, kwargs: dict[str, Any], steps: int, groups: Any = None):
    """``steps`` steps of ``sfplus.ScheduleFreePlus``; returns (x per name, alphas, the optimizer)."""
    opt = sfplus.ScheduleFreePlus(groups or list(problem.params.values()), **kwargs)
    closure = problem.closure_for(opt)
    alphas = []
    for _ in range(steps):
        opt.step(closure)
        alphas.append(opt.stats["alpha"])
    opt.eval()
    x = {name: p.detach().numpy().copy() for name, p in problem.params.items()}
    return x, alphas, opt


def jax_run(sj: Any, problem: MLPProblem, kwargs: dict[str, Any], steps: int, **extra: Any):
    """The same steps with ``sfplus.jax`` (jitted); returns (x per name, alphas, the final state)."""
    import jax
    import optax

    opt = sj.schedule_free_plus(**kwargs, **extra)
    params = jax_params(problem)
    inputs, targets = jax_data(problem)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(jax_loss)(params, inputs, targets)
        updates, state = opt.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    alphas = []
    for _ in range(steps):
        params, state = step(params, state)
        alphas.append(float(state.stats.alpha))
    x = {name: np.asarray(v) for name, v in sj.eval_params(state, params).items()}
    return x, alphas, state


def max_rel_err(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest, over tensors, of max|a - b| / max|b| (an empty tensor counts 0)."""
    worst = 0.0
    for name in b:
        ref = np.asarray(b[name])
        if ref.size == 0:
            continue
        worst = max(worst, float(np.max(np.abs(np.asarray(a[name]) - ref)) / max(np.max(np.abs(ref)), 1e-300)))
    return worst
