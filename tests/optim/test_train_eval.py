"""Train/eval semantics: in train mode the parameters hold y, in eval mode the average x.

The fast class keeps no x: eval() computes x = (y - (1-β̃)z)/β̃ from the β̃ that built y, and train()
inverts it, so a round trip costs rounding. The stated bound for n round trips (measured: about a fifth
of it for fp32 with β̃ = 0.5) is n · ε_dtype · (‖x‖∞ + ‖z - x‖∞) / β̃. The reference copies stored
tensors and is exact.
"""

from __future__ import annotations

import cases
import pytest
import torch
from cases import CLASSES, MLPProblem, OptimizerCase, case_params, quadratic_loss, quadratic_params

TOL = dict(rtol=1e-10, atol=1e-12)


def _train(opt: torch.optim.Optimizer, problem: MLPProblem, steps: int) -> None:
    for _ in range(steps):
        opt.step(problem.closure_for(opt))


@pytest.mark.parametrize("case", case_params())
def test_eval_holds_x_and_train_holds_y(case: OptimizerCase):
    """Against the reference's stored x and y, after 6 steps in lockstep."""
    problems = [MLPProblem.make(torch.Generator().manual_seed(5)) for _ in range(2)]
    ref = case.make(cases.ScheduleFreePlusReference, problems[0].groups())
    fast = case.make(cases.ScheduleFreePlus, problems[1].groups())
    _train(ref, problems[0], 6)
    _train(fast, problems[1], 6)
    ref_params, fast_params = problems[0].params, problems[1].params
    for name, p in fast_params.items():
        torch.testing.assert_close(p.detach(), ref.state[ref_params[name]]["y"], **TOL)
    fast.eval()
    assert not fast.train_mode
    for name, p in fast_params.items():
        torch.testing.assert_close(p.detach(), ref.state[ref_params[name]]["x"], **TOL)
    fast.train()
    assert fast.train_mode
    for name, p in fast_params.items():
        torch.testing.assert_close(p.detach(), ref.state[ref_params[name]]["y"], **TOL)


@pytest.mark.parametrize("cls", CLASSES)
def test_train_and_eval_are_idempotent(cls):
    problem = MLPProblem.make(torch.Generator().manual_seed(6))
    opt = cls(problem.groups(), sf_beta1=0.7)
    _train(opt, problem, 4)

    def values() -> list[torch.Tensor]:
        return [p.detach().clone() for p in problem.params.values()]

    y = values()
    opt.train()  # already in train mode: nothing moves
    assert all(torch.equal(a, b) for a, b in zip(values(), y))
    opt.eval()
    x = values()
    opt.eval()
    assert all(torch.equal(a, b) for a, b in zip(values(), x))
    assert any(not torch.equal(a, b) for a, b in zip(x, y)), "x == y: the test would not see a mode switch"


def test_reference_round_trips_exactly():
    problem = MLPProblem.make(torch.Generator().manual_seed(7))
    opt = cases.ScheduleFreePlusReference(problem.groups(), sf_beta1=0.5)
    _train(opt, problem, 5)
    y = [p.detach().clone() for p in problem.params.values()]
    opt.eval()
    x = [p.detach().clone() for p in problem.params.values()]
    for _ in range(1000):
        opt.train()
        opt.eval()
    assert all(torch.equal(p.detach(), b) for p, b in zip(problem.params.values(), x))
    opt.train()
    assert all(torch.equal(p.detach(), b) for p, b in zip(problem.params.values(), y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sf_beta1", [0.5, 0.9])
def test_fast_round_trips_within_bound(dtype, sf_beta1, gen):
    n = 1000
    w = torch.nn.Parameter(torch.randn(64, generator=gen).to(dtype))
    target = torch.randn(64, generator=gen).to(dtype)
    opt = cases.ScheduleFreePlus([w], sf_beta1=sf_beta1)
    for _ in range(20):
        opt.zero_grad()
        loss = ((w - target) ** 2).mean()
        loss.backward()
        opt.step(loss=loss)
    y0 = w.detach().clone()
    opt.eval()
    x0 = w.detach().clone()
    z = opt.state[w]["z"]
    bound = n * torch.finfo(dtype).eps * (x0.abs().max() + (z - x0).abs().max()).item() / sf_beta1
    for _ in range(n):
        opt.train()
        opt.eval()
    x_drift = (w.detach() - x0).abs().max().item()
    opt.train()
    y_drift = (w.detach() - y0).abs().max().item()
    assert x_drift <= bound and y_drift <= bound, f"drift x {x_drift:.3g}, y {y_drift:.3g}, bound {bound:.3g}"


def test_low_precision_train_restores_the_master_exactly():
    """bf16 params: train() copies y back from the fp32 master, so toggling never accumulates rounding."""
    gen = torch.Generator().manual_seed(8)
    w = torch.nn.Parameter(torch.randn(32, generator=gen).to(torch.bfloat16))
    opt = cases.ScheduleFreePlus([w])
    for _ in range(5):
        opt.zero_grad()
        loss = (w.float() ** 2).mean()
        loss.backward()
        opt.step(loss=loss)
    y = w.detach().clone()
    master = opt.state[w]["y"].clone()
    for _ in range(100):
        opt.eval()
        opt.train()
    assert torch.equal(w.detach(), y)
    assert torch.equal(opt.state[w]["y"], master)


@pytest.mark.parametrize("cls", CLASSES)
def test_params_without_grads_are_never_touched(cls, gen):
    W, b = quadratic_params(gen)
    bystander = torch.nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64))
    inputs = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    opt = cls([W, b, bystander], sf_beta1=0.8, sf_beta1_anneal_steps=3)
    before = bystander.detach().clone()
    for _ in range(5):
        opt.zero_grad()
        loss = quadratic_loss(W, b, inputs)
        loss.backward()
        opt.step(loss=loss)
        opt.eval()
        assert torch.equal(bystander.detach(), before)
        opt.train()
    assert torch.equal(bystander.detach(), before)
    assert not opt.state[bystander]


@pytest.mark.parametrize("cls", CLASSES)
def test_eval_params_context_restores_the_mode(cls):
    problem = MLPProblem.make(torch.Generator().manual_seed(9))
    opt = cls(problem.groups())
    _train(opt, problem, 3)
    y = [p.detach().clone() for p in problem.params.values()]
    opt.eval()
    x = [p.detach().clone() for p in problem.params.values()]
    opt.train()
    with opt.eval_params():
        assert not opt.train_mode
        assert all(torch.allclose(p.detach(), b) for p, b in zip(problem.params.values(), x))
    assert opt.train_mode
    assert all(torch.allclose(p.detach(), b) for p, b in zip(problem.params.values(), y))
    opt.eval()
    with opt.eval_params():  # entered in eval mode: stays in eval mode after
        pass
    assert not opt.train_mode
    with pytest.raises(KeyError):  # an exception inside the block still restores the mode
        opt.train()
        with opt.eval_params():
            raise KeyError("boom")
    assert opt.train_mode


@pytest.mark.parametrize("cls", CLASSES)
def test_fresh_optimizer_toggles_without_state(cls, gen):
    """eval()/train() before any step leave the params as they are (x = y = z = initial)."""
    W, b = quadratic_params(gen)
    before = W.detach().clone()
    opt = cls([W, b])
    opt.eval()
    assert torch.equal(W.detach(), before)
    opt.train()
    assert torch.equal(W.detach(), before)
