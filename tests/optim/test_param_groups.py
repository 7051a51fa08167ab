"""Param groups: F, I and ‖g‖₁ are global; ``lr`` (a multiplier) and ``weight_decay``
are per group; an outside LR scheduler that changes ``lr`` keeps working."""

from __future__ import annotations

import pytest
import torch
from cases import CLASSES, MLPProblem, state_z


def _steps(opt: torch.optim.Optimizer, problem: MLPProblem, n: int) -> list[float]:
    alphas = []
    for _ in range(n):
        opt.step(problem.closure_for(opt))
        alphas.append(opt.stats["alpha"])
    return alphas


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("lr", [0.0, 1e-12])
def test_group_with_lr_near_zero_stays_put_while_another_trains(cls, lr):
    problem = MLPProblem.make(torch.Generator().manual_seed(40))
    opt = cls(problem.groups(group1_lr=lr), weight_decay=2.0, sf_beta1=0.8, sf_beta1_anneal_steps=4)
    frozen = {n: problem.params[n].detach().clone() for n in ("W2", "b2")}
    trained = problem.params["W1"].detach().clone()
    _steps(opt, problem, 6)
    assert opt.stats["alphas"][1] == pytest.approx(lr * opt.stats["alphas"][0])
    for name, before in frozen.items():
        # α = 0 leaves z in place; y = β̃x + (1-β̃)z with x = z is rebuilt with rounding (a few ulp).
        torch.testing.assert_close(problem.params[name].detach(), before, rtol=1e-9, atol=1e-10)
        assert torch.equal(state_z(opt, problem.params[name]), before) if lr == 0.0 else True
    assert not torch.allclose(problem.params["W1"].detach(), trained)


@pytest.mark.parametrize("cls", CLASSES)
def test_statistics_are_global_across_groups(cls):
    """The same tensors in two groups (same settings) or in one: the same α, c and parameters."""
    one, two = (MLPProblem.make(torch.Generator().manual_seed(41)) for _ in range(2))
    opt_one = cls(list(one.params.values()), polyak_beta=0.9, c_warmup=2, r=1.0)
    opt_two = cls(two.groups(), polyak_beta=0.9, c_warmup=2, r=1.0)
    for _ in range(6):
        opt_one.step(one.closure_for(opt_one))
        opt_two.step(two.closure_for(opt_two))
        assert opt_two.stats["alphas"] == pytest.approx([opt_one.stats["alpha"]] * 2, rel=1e-12)
        assert opt_two.stats["cs"] == pytest.approx([opt_one.stats["c"]] * 2, rel=1e-12)
        assert opt_two.stats["l1"] == pytest.approx(opt_one.stats["l1"], rel=1e-12)
    for name, p in one.params.items():
        torch.testing.assert_close(p.detach(), two.params[name].detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", CLASSES)
def test_decay_and_no_decay_groups_both_train(cls):
    problem = MLPProblem.make(torch.Generator().manual_seed(42))
    p = problem.params
    groups = [
        {"params": [p["W1"], p["W2"]], "weight_decay": 2.0},
        {"params": [p["b1"], p["b2"], p["empty"]], "weight_decay": 0.0},
    ]
    opt = cls(groups, max_step=0.02)
    with torch.no_grad():
        initial = problem.loss().item()
    before = {n: t.detach().clone() for n, t in p.items()}
    _steps(opt, problem, 30)
    for name in ("W1", "W2", "b1", "b2"):
        assert not torch.equal(p[name].detach(), before[name]), name
    with opt.eval_params(), torch.no_grad():
        assert problem.loss().item() < initial


@pytest.mark.parametrize("cls", CLASSES)
def test_outside_lr_scheduler_scales_alpha(cls):
    """LambdaLR halves the group lr every step: α is that lr times the Polyak factor of the logged scalars."""
    problem = MLPProblem.make(torch.Generator().manual_seed(43))
    opt = cls(problem.groups(), polyak_beta=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5**epoch)
    for k in range(6):
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs == pytest.approx([0.5**k] * 2)
        opt.step(problem.closure_for(opt))
        s = opt.stats
        polyak = max(0.0, s["loss"] + s["inner"]) / s["e_hat"]
        assert s["alphas"] == pytest.approx([lr * polyak for lr in lrs], rel=1e-12)
        scheduler.step()


@pytest.mark.parametrize("cls", CLASSES)
def test_tensor_lr_is_a_multiplier_too(cls):
    runs = []
    for lr in (0.5, torch.tensor(0.5)):
        problem = MLPProblem.make(torch.Generator().manual_seed(44))
        opt = cls(problem.groups(), lr=lr)
        runs.append(_steps(opt, problem, 4))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("cls", CLASSES)
def test_group_added_mid_run_joins_the_global_step(cls):
    problem = MLPProblem.make(torch.Generator().manual_seed(45))
    groups = problem.groups()
    opt = cls(groups[:1], c_warmup=1)
    for _ in range(3):
        opt.zero_grad()
        loss = problem.loss()
        loss.backward()
        opt.step(loss=loss)
    opt.add_param_group(groups[1])
    new = opt.param_groups[1]
    assert (new["k"], new["train_mode"], new["weight_sum"]) == (3, True, 0.0)
    before = problem.params["W2"].detach().clone()
    _steps(opt, problem, 2)
    assert [g["k"] for g in opt.param_groups] == [5, 5]
    assert not torch.equal(problem.params["W2"].detach(), before)
    assert all(torch.isfinite(t).all() for t in problem.params.values())
