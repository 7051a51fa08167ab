"""Memory and determinism: only the documented state, and identical runs are identical."""

from __future__ import annotations

import cases
import pytest
import torch
from cases import ALL_FEATURES, MLPProblem, OptimizerCase, case_params

from sfplus._base import RUN_SCALARS


def _tensors_outside_state(opt: torch.optim.Optimizer) -> list[str]:
    """Names of tensors the optimizer holds other than its params, ``state`` and the documented 0-D run-state
    scalars of each group (``sfplus._base.RUN_SCALARS``: k, e, ..., on the device so that a step needs no
    host sync). There should be none."""
    found = [f"attribute {name}" for name, value in vars(opt).items() if isinstance(value, torch.Tensor)]
    for gi, group in enumerate(opt.param_groups):
        found += [
            f"group {gi} {key}"
            for key, value in group.items()
            if isinstance(value, torch.Tensor) and not (key in RUN_SCALARS and value.dim() == 0)
        ]
    return found


@pytest.mark.parametrize("case", case_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exactly_d_m_v_per_param(case: OptimizerCase, dtype):
    problem = MLPProblem.make(torch.Generator().manual_seed(50), dtype=dtype)
    opt = case.make(cases.ScheduleFreePlus, problem.groups())
    for _ in range(3):
        opt.step(problem.closure_for(opt))
    for name, p in problem.params.items():
        state = opt.state[p]
        assert sorted(state) == ["d", "m", "v"], name
        for key, t in state.items():
            assert t.shape == p.shape and t.dtype == dtype, f"{name}.{key}"
            assert t.untyped_storage().data_ptr() != p.untyped_storage().data_ptr() or p.numel() == 0
    assert _tensors_outside_state(opt) == []
    assert len(opt.state) == len(problem.params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eval_mode_keeps_one_copy_of_y_aside(dtype):
    """In eval mode a full-precision parameter's y is kept aside (one copy: state ``y``, dropped by train());
    a bf16/fp16 parameter's fp32 master already is that copy, so it gets none more."""
    problem = MLPProblem.make(torch.Generator().manual_seed(54), dtype=dtype)
    opt = cases.ScheduleFreePlus(problem.groups())
    for _ in range(3):
        opt.step(problem.closure_for(opt))
    in_train = {name: sorted(opt.state[p]) for name, p in problem.params.items()}
    opt.eval()
    for name, p in problem.params.items():
        state = opt.state[p]
        assert sorted(state) == ["d", "m", "v", "y"], name
        assert state["y"].shape == p.shape and state["y"].dtype == opt._state_dtype(p), name
    opt.train()
    assert {name: sorted(opt.state[p]) for name, p in problem.params.items()} == in_train
    assert _tensors_outside_state(opt) == []


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_adds_only_an_fp32_master(dtype):
    problem = MLPProblem.make(torch.Generator().manual_seed(51), dtype=dtype)
    opt = cases.ScheduleFreePlus(problem.groups(), **ALL_FEATURES)
    for _ in range(3):
        opt.step(problem.closure_for(opt))
    for name, p in problem.params.items():
        state = opt.state[p]
        assert sorted(state) == ["d", "m", "v", "y"], name
        assert all(t.dtype == torch.float32 and t.shape == p.shape for t in state.values()), name
        assert torch.equal(state["y"].to(dtype), p.detach()), f"{name}: the param is the rounded master y"


@pytest.mark.parametrize("cls", [cases.ScheduleFreePlus, cases.ScheduleFreePlusReference])
@pytest.mark.parametrize("foreach", [False, True])
def test_two_identical_runs_are_identical(cls, foreach):
    runs = []
    for _ in range(2):
        problem = MLPProblem.make(torch.Generator().manual_seed(52))
        opt = cls(problem.groups(), foreach=foreach, **ALL_FEATURES)
        stats = []
        for _ in range(8):
            opt.step(problem.closure_for(opt))
            stats.append(dict(opt.stats))
        with opt.eval_params():
            x = [p.detach().clone() for p in problem.params.values()]
        runs.append(([p.detach().clone() for p in problem.params.values()], x, stats))
    (y_a, x_a, s_a), (y_b, x_b, s_b) = runs
    assert all(torch.equal(a, b) for a, b in zip(y_a, y_b))
    assert all(torch.equal(a, b) for a, b in zip(x_a, x_b))
    assert s_a == s_b


def test_step_counter_is_an_exact_int():
    """k is an exact integer (a float32 counter stops counting exactly beyond 2**24 steps): an int64 0-D
    tensor on the parameters' device once stepped (so that a step needs no host sync), and a Python int
    set by hand (as here) is taken."""
    problem = MLPProblem.make(torch.Generator().manual_seed(53))
    opt = cases.ScheduleFreePlus(problem.groups())
    opt.step(problem.closure_for(opt))
    for group in opt.param_groups:
        group["k"] = 2**24 + 1  # as if resumed late in a long run
    opt.step(problem.closure_for(opt))
    k = opt.param_groups[0]["k"]
    assert k.dtype == torch.int64 and k.dim() == 0 and int(k) == 2**24 + 2
    assert opt.stats["k"] == 2**24 + 2 and type(opt.stats["k"]) is int
