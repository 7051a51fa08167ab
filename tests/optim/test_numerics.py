"""Numerical faults the optimizer must survive.

Policies under test (docs/algorithm.md): no gradients or all-zero gradients make a step a full no-op
(k not advanced); a NaN/inf loss or gradient is skipped with nothing changed (or raises with
``nonfinite="raise"``); α is never negative; low-precision params keep fp32 state and an fp32 master y.
"""

from __future__ import annotations

import math
from typing import Any

import cases
import pytest
import torch
from cases import (
    ALL_FEATURES,
    CLASSES,
    OPTIMIZER_CASES,
    MLPProblem,
    OptimizerCase,
    assert_snapshots_equal,
    case_params,
    quadratic_loss,
    quadratic_params,
    snapshot,
)


def _primed(cls: type, seed: int = 0, steps: int = 4, **kwargs) -> tuple[MLPProblem, torch.optim.Optimizer]:
    problem = MLPProblem.make(torch.Generator().manual_seed(seed))
    opt = cls(problem.groups(), **kwargs)
    for _ in range(steps):
        opt.step(problem.closure_for(opt))
    return problem, opt


# ------------------------------------------------------------------------------ no / zero gradients
@pytest.mark.parametrize("cls", CLASSES)
def test_all_grads_none_is_a_noop(cls):
    problem, opt = _primed(cls)
    opt.zero_grad()
    before = snapshot(opt)
    opt.step(loss=problem.loss())
    assert_snapshots_equal(before, snapshot(opt), "no-grad step")
    assert opt.stats["status"] == "no_grad" and opt.stats["skipped"]
    fresh = cls(MLPProblem.make(torch.Generator().manual_seed(0)).groups())
    fresh.step(loss=1.0)  # never any gradient: not an error
    assert not any(fresh.state.values())


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("weight_decay", [0.0, 10.0])
def test_all_zero_grads_change_nothing(cls, weight_decay):
    problem, opt = _primed(cls, weight_decay=weight_decay, sf_beta1=0.8, sf_beta1_anneal_steps=8)
    before = snapshot(opt)
    opt.zero_grad(set_to_none=False)
    opt.step(loss=problem.loss())
    assert_snapshots_equal(before, snapshot(opt), "zero-grad step")
    assert opt.stats["status"] == "zero_grad" and opt.stats["k"] == 4
    # ... also as the very first step (the public code divides by zero here).
    W, b = quadratic_params(torch.Generator().manual_seed(1))
    first = cls([W, b])
    W.grad, b.grad = torch.zeros_like(W), torch.zeros_like(b)
    first.step(loss=0.0)
    assert first.param_groups[0]["k"] == 0 and first.stats["status"] == "zero_grad"


@pytest.mark.parametrize("cls", CLASSES)
def test_params_without_grad_are_absent_from_the_statistics(cls, gen):
    """A run with a bystander param (grad None) takes the same steps as a run without it."""
    W, b = quadratic_params(gen)
    inputs = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    bystander = torch.nn.Parameter(torch.randn(7, generator=gen, dtype=torch.float64))
    W2, b2 = (torch.nn.Parameter(t.detach().clone()) for t in (W, b))
    with_bystander = cls([W, b, bystander])
    without = cls([W2, b2])
    before = bystander.detach().clone()
    for _ in range(5):
        for opt, (w, bias) in ((with_bystander, (W, b)), (without, (W2, b2))):
            opt.zero_grad()
            loss = quadratic_loss(w, bias, inputs)
            loss.backward()
            opt.step(loss=loss)
        assert with_bystander.stats["l1"] == without.stats["l1"]
        assert with_bystander.stats["alpha"] == without.stats["alpha"]
    assert torch.equal(W, W2) and torch.equal(bystander.detach(), before)
    assert not with_bystander.state[bystander]


# ------------------------------------------------------------------------------ NaN / inf
BAD_INPUTS = ["loss_nan", "loss_inf", "loss_neg_inf", "grad_nan", "grad_inf"]


def _bad_step(opt: torch.optim.Optimizer, problem: MLPProblem, bad: str) -> None:
    opt.zero_grad()
    loss = problem.loss()
    loss.backward()
    if bad.startswith("grad"):
        problem.params["W2"].grad[1, 2] = math.nan if bad == "grad_nan" else math.inf
        opt.step(loss=loss)
    else:
        opt.step(loss={"loss_nan": math.nan, "loss_inf": math.inf, "loss_neg_inf": -math.inf}[bad])


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_nonfinite_skip_changes_nothing_and_training_goes_on(cls, bad):
    kwargs = dict(ALL_FEATURES)
    problem, opt = _primed(cls, **kwargs)
    clean_problem, clean = _primed(cls, **kwargs)
    before = snapshot(opt)
    what = "loss" if bad.startswith("loss") else "gradient"
    # The warning needs host values, so it is raised when the step's stats are read (the step itself does
    # not wait for the device: docs/algorithm.md, "Host synchronisation and capture").
    _bad_step(opt, problem, bad)
    after = snapshot(opt)
    with pytest.warns(RuntimeWarning, match=rf"non-finite {what} at step 5 .*step skipped"):
        opt.stats["status"]
    for group in after["groups"]:
        assert group.pop("num_skipped") == 1
    for group in before["groups"]:
        assert group.pop("num_skipped") == 0
    assert_snapshots_equal(before, after, f"{bad} step")
    assert opt.stats["status"] == "skipped_nonfinite" and opt.stats["num_skipped"] == 1
    # The next finite steps equal a run that never saw the bad one.
    for _ in range(3):
        opt.step(problem.closure_for(opt))
        clean.step(clean_problem.closure_for(clean))
    for name, p in problem.params.items():
        assert torch.equal(p, clean_problem.params[name]), name


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_nonfinite_raise_names_the_step_and_changes_nothing(cls, bad):
    problem, opt = _primed(cls, nonfinite="raise")
    before = snapshot(opt)
    what = "loss" if bad.startswith("loss") else "gradient"
    with pytest.raises(FloatingPointError, match=rf"non-finite {what} at step 5 .*nothing was updated"):
        _bad_step(opt, problem, bad)
    assert_snapshots_equal(before, snapshot(opt), f"{bad} raise")


# ------------------------------------------------------------------------------ the Polyak step
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("case", case_params())
def test_alpha_is_never_negative(cls, case: OptimizerCase):
    problem = MLPProblem.make(torch.Generator().manual_seed(11))
    opt = case.make(cls, problem.groups())
    alphas = []
    for _ in range(12):
        opt.step(problem.closure_for(opt))
        alphas += opt.stats["alphas"]
    assert all(a >= 0.0 and math.isfinite(a) for a in alphas)
    assert any(a > 0.0 for a in alphas)


@pytest.mark.parametrize("cls", CLASSES)
def test_negative_numerator_gives_zero_step(cls, gen):
    W, b = quadratic_params(gen)
    inputs = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    opt = cls([W, b], loss_floor=1e3)  # F - f* < 0 (and I = 0 at the first step)
    loss = quadratic_loss(W, b, inputs)
    loss.backward()
    before = W.detach().clone()
    opt.step(loss=loss)
    assert opt.stats["alpha"] == 0.0 and opt.stats["status"] == "ok"
    # z does not move, so neither do x and y (up to the reference's rounding of 0.9·z + 0.1·z).
    torch.testing.assert_close(W.detach(), before, rtol=1e-15, atol=0.0)


@pytest.mark.parametrize("cls", CLASSES)
def test_alpha_is_invariant_to_scaling_loss_and_grads(cls):
    """F, I and ‖g‖₁ all scale by s, so α does not: this catches a loss or gradient left scaled."""
    runs = []
    for scale in (1.0, 1000.0):
        problem = MLPProblem.make(torch.Generator().manual_seed(12))
        opt = cls(problem.groups(), polyak_beta=0.9, eps=1e-12)
        alphas = []
        for _ in range(8):
            opt.zero_grad()
            loss = problem.loss() * scale
            loss.backward()
            opt.step(loss=loss)
            alphas.append(opt.stats["alpha"])
        runs.append(alphas)
    assert runs[0] == pytest.approx(runs[1], rel=1e-6)


@pytest.mark.parametrize("cls", CLASSES)
def test_max_step_caps_a_loss_spike(cls):
    alphas = {}
    for cap in (None, 0.05):
        problem, opt = _primed(cls, max_step=cap)
        normal = opt.stats["alpha"]
        opt.zero_grad()
        loss = problem.loss()
        loss.backward()
        opt.step(loss=loss * 1e6)  # the loss spikes, the gradient does not
        alphas[cap] = (normal, opt.stats["alpha"])
        assert all(torch.isfinite(p).all() for p in problem.params.values())
    normal, spiked = alphas[None]
    assert spiked > 1e4 * normal, "without a cap the step grows with the spike (and is logged)"
    assert alphas[0.05][1] == 0.05


# ------------------------------------------------------------------------------ low precision
LOW_PRECISION_CASES = [c for c in OPTIMIZER_CASES if c.desc in ("default", "polyak_ema", "anneal", "all_features")]


def _lowp_run(case: OptimizerCase, dtype: torch.dtype, steps: int) -> tuple[list[float], Any]:
    gen = torch.Generator().manual_seed(13)
    W = torch.nn.Parameter(torch.randn(8, 16, generator=gen).to(dtype))
    b = torch.nn.Parameter(torch.randn(8, generator=gen).to(dtype))
    eval_inputs = torch.randn(256, 16, generator=torch.Generator().manual_seed(14))
    opt = case.make(cases.ScheduleFreePlus, [W, b])
    eval_losses = []
    for k in range(1, steps + 1):
        inputs = torch.randn(32, 16, generator=gen)
        opt.zero_grad()
        loss = ((inputs @ W.float().t() + b.float()) ** 2).mean()
        loss.backward()
        opt.step(loss=loss)
        assert W.dtype == dtype and b.dtype == dtype
        assert torch.isfinite(W).all() and torch.isfinite(b).all(), f"non-finite at step {k}"
        if k % 20 == 0:
            with opt.eval_params():
                eval_losses.append(((eval_inputs @ W.float().t() + b.float()) ** 2).mean().item())
    return eval_losses, opt.state


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", case_params(tuple(LOW_PRECISION_CASES)))
def test_low_precision_trains_like_fp32(dtype, case: OptimizerCase):
    """100 steps: dtype kept, finite, fp32 state, and the average keeps improving (no bf16 stall)."""
    lowp, state = _lowp_run(case, dtype, 100)
    full, _ = _lowp_run(case, torch.float32, 100)
    for param_state in state.values():
        assert sorted(param_state) == ["d", "m", "v", "y"]
        assert all(t.dtype == torch.float32 for t in param_state.values())
    assert all(later < earlier for earlier, later in zip(lowp, lowp[1:])), f"x stalled: {lowp}"
    assert lowp[-1] == pytest.approx(full[-1], rel=0.05), f"{dtype}: {lowp} vs fp32 {full}"


# ------------------------------------------------------------------------------ GradScaler
def _scaler_run(use_scaler: bool, inject_inf_at: int | None = None):
    problem = MLPProblem.make(torch.Generator().manual_seed(15))
    opt = cases.ScheduleFreePlus(problem.groups(), polyak_beta=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000) if use_scaler else None
    alphas, snapshots = [], []
    for i in range(6):
        opt.zero_grad()
        loss = problem.loss()
        if scaler is None:
            loss.backward()
            opt.step(loss=loss)
        else:
            scaler.scale(loss).backward()
            if i == inject_inf_at:
                problem.params["W1"].grad[0, 0] = math.inf
            before = snapshot(opt)
            scaler.step(opt, loss=loss)  # unscales the grads, skips the step on inf; the loss is unscaled
            scaler.update()
            if i == inject_inf_at:
                assert_snapshots_equal(before, snapshot(opt), "GradScaler inf step")
                assert scaler.get_scale() == 2.0**9
                continue
        alphas.append(opt.stats["alpha"])
        snapshots.append([p.detach().clone() for p in problem.params.values()])
    return alphas, snapshots


def test_grad_scaler_step_matches_an_unscaled_run():
    plain_alphas, plain = _scaler_run(use_scaler=False)
    scaled_alphas, scaled = _scaler_run(use_scaler=True)
    assert scaled_alphas == pytest.approx(plain_alphas, rel=1e-12)
    for a, b in zip(plain, scaled):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_grad_scaler_skips_an_inf_step():
    plain_alphas, _ = _scaler_run(use_scaler=False)
    alphas, _ = _scaler_run(use_scaler=True, inject_inf_at=2)
    assert len(alphas) == 5  # one step skipped by the scaler, the rest went on
    assert alphas[:2] == pytest.approx(plain_alphas[:2], rel=1e-12)
    assert all(math.isfinite(a) for a in alphas)
