"""Degenerate settings reduce to known optimizers.

1. With ``c_warmup`` at least the number of steps, c = 1 every step, so x = y = z and ScheduleFree+ is
   AdamC (Adam whose decoupled decay is scaled by α²) with the Polyak α. Checked against Adam written out
   by hand, fed the α sequence the optimizer logged.
2. With α pinned (``max_step`` below every Polyak step, guaranteed by a very low ``loss_floor``) and no
   annealing, ScheduleFree+ is Schedule-Free with Adam as the base optimizer. Checked against the
   ``schedulefree`` package's ``ScheduleFreeWrapperReference`` around ``torch.optim.Adam`` (the test
   oracle of the dev extra), whose decay at y is ``lr · weight_decay_at_y``: λα there is α²λ here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest
import torch
from cases import CLASSES, MLPProblem


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("weight_decay", [0.0, 2.0])
def test_warm_start_throughout_is_adamc(cls, weight_decay):
    steps, beta1, beta2, eps = 8, 0.9, 0.95, 1e-8
    problem = MLPProblem.make(torch.Generator().manual_seed(30))
    names = list(problem.params)
    z = [problem.params[n].detach().clone() for n in names]
    m = [torch.zeros_like(t) for t in z]
    v = [torch.zeros_like(t) for t in z]
    opt = cls(problem.groups(), c_warmup=steps, weight_decay=weight_decay, polyak_beta=0.9)
    for k in range(1, steps + 1):
        opt.zero_grad()
        loss = problem.loss()
        loss.backward()
        grads = [problem.params[n].grad.clone() for n in names]
        opt.step(loss=loss)
        assert opt.stats["c"] == 1.0
        alphas = [opt.stats["alphas"][0]] * 3 + [opt.stats["alphas"][1]] * 2  # per group, as in MLPProblem.groups
        for i, g in enumerate(grads):  # AdamC, one line per operation
            alpha = alphas[i]
            z[i] = z[i] - alpha**2 * weight_decay * z[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            z[i] = z[i] - alpha * (m[i] / (1 - beta1**k)) / ((v[i] / (1 - beta2**k)).sqrt() + eps)
        for i, n in enumerate(names):
            torch.testing.assert_close(problem.params[n].detach(), z[i], rtol=1e-12, atol=1e-14, msg=f"{n} step {k}")
    with opt.eval_params():  # x = y = z
        for i, n in enumerate(names):
            torch.testing.assert_close(problem.params[n].detach(), z[i], rtol=1e-12, atol=1e-14)


class _SeparateState:
    """Adam behind its own state dict: the wrapper keeps x, y, z in ``base.state``, and torch's Adam only
    initialises a param's state when that dict is empty, so sharing it would leave Adam without moments."""

    def __init__(self, adam: torch.optim.Adam) -> None:
        self.adam = adam
        self.param_groups = adam.param_groups
        self.state: dict[Any, dict[str, Any]] = defaultdict(dict)

    def step(self) -> None:
        self.adam.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adam.zero_grad(set_to_none)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(sf_beta1=0.7, r=1.0, weight_lr_power=1.0),
        dict(weight_decay=2.0, betas=(0.8, 0.99)),
    ],
    ids=["plain", "r1_power1", "decay"],
)
def test_fixed_step_is_schedule_free_adam(cls, kwargs):
    schedulefree = pytest.importorskip("schedulefree", reason="the schedulefree oracle is in the dev extra")
    alpha, steps = 0.01, 12
    settings = dict(dict(sf_beta1=0.9, r=0.0, weight_lr_power=2.0, weight_decay=0.0, betas=(0.9, 0.95)), **kwargs)
    ours_problem = MLPProblem.make(torch.Generator().manual_seed(31))
    oracle_problem = MLPProblem.make(torch.Generator().manual_seed(31))
    opt = cls(ours_problem.groups(), max_step=alpha, loss_floor=-1e9, **settings)
    base = torch.optim.Adam(oracle_problem.groups(), lr=alpha, betas=settings["betas"], eps=1e-8, foreach=False)
    oracle = schedulefree.ScheduleFreeWrapperReference(
        _SeparateState(base),
        momentum=settings["sf_beta1"],
        weight_decay_at_y=alpha * settings["weight_decay"],
        r=settings["r"],
        weight_lr_power=settings["weight_lr_power"],
    )
    oracle.train()
    for k in range(1, steps + 1):
        opt.step(ours_problem.closure_for(opt))
        assert opt.stats["alpha"] == alpha, "α was not pinned"
        oracle.zero_grad()
        oracle_problem.loss().backward()
        oracle.step()
        for name, p in ours_problem.params.items():
            q = oracle_problem.params[name]
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-9, msg=f"y of {name}, step {k}")
    opt.eval()
    oracle.eval()
    for name, p in ours_problem.params.items():
        torch.testing.assert_close(p.detach(), oracle_problem.params[name].detach(), rtol=1e-6, atol=1e-9)
    assert math.isclose(opt.param_groups[0]["weight_sum"], base.param_groups[0]["weight_sum"], rel_tol=1e-12)
