"""Train/eval semantics: in train mode the parameters hold y, in eval mode the average x.

eval() writes x and keeps y aside (the fast class: a copy of each full-precision parameter, or its fp32
master; the reference: its stored y), and train() puts y back bit for bit wherever the parameter still
holds that x; an element changed in eval mode is taken as the new x and its y rebuilt from it and z. A
state dict saved in eval mode by version 0.1.0 kept no y: then train() rebuilds y, which costs rounding,
within ε_dtype · (‖x‖∞ + ‖z - x‖∞) / β̃.
"""

from __future__ import annotations

import cases
import pytest
import torch
from cases import (
    CLASSES,
    MLPProblem,
    OptimizerCase,
    case_params,
    format_1_state_dict,
    quadratic_loss,
    quadratic_params,
    state_z,
)

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


def _values(problem: MLPProblem) -> list[torch.Tensor]:
    return [p.detach().clone() for p in problem.params.values()]


def _bitwise_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(u.dtype == v.dtype and torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("cls", CLASSES)
def test_round_trip_is_exact(cls, dtype):
    """eval() then train() gives y back bit for bit, however often; so does eval_params()."""
    problem = MLPProblem.make(torch.Generator().manual_seed(10), dtype=dtype)
    opt = cls(problem.groups(), sf_beta1=0.5)
    _train(opt, problem, 6)
    y = _values(problem)
    opt.eval()
    x = _values(problem)
    assert not _bitwise_equal(x, y), "x == y: the test would not see a mode switch"
    for _ in range(20):
        opt.train()
        assert _bitwise_equal(_values(problem), y)
        opt.eval()
        assert _bitwise_equal(_values(problem), x)
    opt.train()
    with opt.eval_params():
        assert _bitwise_equal(_values(problem), x)
    assert _bitwise_equal(_values(problem), y)
    _train(opt, problem, 1)  # and training goes on from there


@pytest.mark.parametrize("cls", CLASSES)
def test_round_trip_through_a_state_dict_in_eval_mode_is_exact(cls, tmp_path):
    """A state dict and the weights (x), both saved in eval mode, loaded into a fresh optimizer and model
    (through torch.save / torch.load(weights_only=True)): train() there gives the y of the original."""
    problem = MLPProblem.make(torch.Generator().manual_seed(11), dtype=torch.float32)
    opt = cls(problem.groups(group1_lr=0.5), sf_beta1=0.5)
    _train(opt, problem, 6)
    y = _values(problem)
    opt.eval()
    torch.save({"weights": _values(problem), "optimizer": opt.state_dict()}, tmp_path / "ckpt.pt")
    opt.train()

    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    other = MLPProblem.make(torch.Generator().manual_seed(99), dtype=torch.float32)  # other weights, same data
    fresh = MLPProblem(params=other.params, inputs=problem.inputs, targets=problem.targets)
    twin = cls(fresh.groups(group1_lr=0.5), sf_beta1=0.5)
    with torch.no_grad():
        for p, value in zip(fresh.params.values(), saved["weights"]):
            p.copy_(value)
    twin.load_state_dict(saved["optimizer"])
    assert not twin.train_mode
    twin.train()
    assert _bitwise_equal(_values(fresh), y)
    for _ in range(3):  # the two continue in lockstep
        _train(opt, problem, 1)
        _train(twin, fresh, 1)
        assert _bitwise_equal(_values(fresh), _values(problem))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_x_changed_in_eval_mode_is_the_new_x(dtype):
    """Weights written into the model in eval mode are the new x (in both classes alike): their y is
    rebuilt as β̃x + (1-β̃)z, and every element left alone gets its old y back exactly."""
    problems = [MLPProblem.make(torch.Generator().manual_seed(12), dtype=dtype) for _ in range(2)]
    opts = [cls(pb.groups(), sf_beta1=0.5) for cls, pb in zip(CLASSES, problems)]
    for opt, problem in zip(opts, problems):
        _train(opt, problem, 6)
    ys = [_values(problem) for problem in problems]
    for opt, problem in zip(opts, problems):
        opt.eval()
        with torch.no_grad():
            problem.params["W1"].fill_(0.25)  # a whole tensor replaced (e.g. loaded)
            problem.params["W2"][0, 0] = 0.5  # one element edited (of a non-contiguous tensor)
        opt.train()
    tol = dict(rtol=1e-2, atol=1e-2)  # bf16: the parameter is the rounded fp32 master
    for opt, problem, y in zip(opts, problems, ys):
        names = list(problem.params)
        for name, p, y_old in zip(names, problem.params.values(), y):
            if name not in ("W1", "W2"):
                assert torch.equal(p.detach(), y_old), name
        z, beta = state_z(opt, problem.params["W1"]), float(opt.param_groups[0]["y_beta"])
        rebuilt = beta * 0.25 + (1 - beta) * z
        torch.testing.assert_close(
            problem.params["W1"].detach().to(z.dtype), rebuilt, **(TOL if dtype == torch.float64 else tol)
        )
        w2, y2 = problem.params["W2"].detach().reshape(-1), y[names.index("W2")].reshape(-1)
        assert torch.equal(w2[1:], y2[1:]) and not torch.equal(w2[:1], y2[:1])
    for a, b in zip(_values(problems[0]), _values(problems[1])):  # the two classes agree
        torch.testing.assert_close(a, b, **(TOL if dtype == torch.float64 else tol))


def _trained_on_a_quadratic(dtype, sf_beta1, gen):
    """A 64-element parameter after 20 steps on a quadratic, and its optimizer (in train mode)."""
    w = torch.nn.Parameter(torch.randn(64, generator=gen).to(dtype))
    target = torch.randn(64, generator=gen).to(dtype)
    opt = cases.ScheduleFreePlus([w], sf_beta1=sf_beta1)
    for _ in range(20):
        opt.zero_grad()
        loss = ((w - target) ** 2).mean()
        loss.backward()
        opt.step(loss=loss)
    return w, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sf_beta1", [0.5, 0.9])
def test_eval_state_without_kept_y_rebuilds_within_bound(dtype, sf_beta1, gen):
    """An eval-mode state dict of version 0.1.0 kept no y: train() rebuilds it from x and z, up to rounding."""
    w, opt = _trained_on_a_quadratic(dtype, sf_beta1, gen)
    y0 = w.detach().clone()
    opt.eval()
    x0 = w.detach().clone()
    state = format_1_state_dict(opt)
    del state["state"][0]["y"]  # as version 0.1.0 saved it: z, m, v
    twin_w = torch.nn.Parameter(x0.clone())
    twin = cases.ScheduleFreePlus([twin_w], sf_beta1=sf_beta1)
    twin.load_state_dict(state)
    assert sorted(twin.state[twin_w]) == ["m", "v", "z"]  # y is not known until train(): z stays
    twin.train()
    assert sorted(twin.state[twin_w]) == ["d", "m", "v"]
    z = state_z(opt, w)
    bound = torch.finfo(dtype).eps * (x0.abs().max() + (z - x0).abs().max()).item() / sf_beta1
    drift = (twin_w.detach() - y0).abs().max().item()
    assert drift <= bound, f"drift {drift:.3g}, bound {bound:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eval_state_with_d_but_without_kept_y_rebuilds_y(dtype, gen):
    """An eval-mode state loaded without its kept y (torch.distributed.checkpoint into an optimizer whose
    state had none): train() rebuilds y = x - (1 - 1/β̃)·d from the parameter's x, up to rounding."""
    w, opt = _trained_on_a_quadratic(dtype, 0.9, gen)
    y0 = w.detach().clone()
    opt.eval()
    state = opt.state_dict()
    del state["state"][0]["y"]
    twin_w = torch.nn.Parameter(w.detach().clone())
    twin = cases.ScheduleFreePlus([twin_w], sf_beta1=0.9)
    twin.load_state_dict(state)
    twin.train()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(twin_w.detach(), y0, rtol=8 * eps, atol=8 * eps * y0.abs().max().item())
    assert sorted(twin.state[twin_w]) == ["d", "m", "v"]


@pytest.mark.parametrize("cls", CLASSES)
def test_y_values_give_y_in_either_mode(cls):
    problem = MLPProblem.make(torch.Generator().manual_seed(13), dtype=torch.float32)
    frozen = torch.nn.Parameter(torch.ones(3))
    opt = cls([*problem.groups(), {"params": [frozen]}])
    _train(opt, problem, 4)
    y = _values(problem)
    in_train = {p: value.clone() for p, value in opt.y_values().items()}
    opt.eval()
    in_eval = opt.y_values()
    assert in_eval[frozen] is frozen  # no state: x = y = the param
    for p, y_old in zip(problem.params.values(), y):
        assert torch.equal(in_train[p], y_old) and torch.equal(in_eval[p], y_old)
        assert not torch.equal(p.detach(), y_old) or p.numel() == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_z_values_give_z_in_either_mode(dtype):
    """The fast class keeps d = z - y; z_values() gives z = y + d, the same in train and eval mode, and in
    float64 equal to the reference's stored z (1e-10, as the parity tests)."""
    problems = [MLPProblem.make(torch.Generator().manual_seed(14), dtype=dtype) for _ in range(2)]
    ref = cases.ScheduleFreePlusReference(problems[0].groups(), sf_beta1=0.8, weight_decay=2.0)
    fast = cases.ScheduleFreePlus(problems[1].groups(), sf_beta1=0.8, weight_decay=2.0)
    _train(ref, problems[0], 5)
    _train(fast, problems[1], 5)
    in_train = fast.z_values()
    fast.eval()
    in_eval = fast.z_values()
    fast.train()
    for (name, p), p_ref in zip(problems[1].params.items(), problems[0].params.values()):
        assert torch.equal(in_train[p], in_eval[p]), name
        assert in_train[p].dtype == fast._state_dtype(p)
        if dtype == torch.float64:  # (bf16: the two classes' bf16 parameters round apart, and so do the runs)
            torch.testing.assert_close(in_train[p], ref.state[p_ref]["z"], **TOL, msg=name)


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
