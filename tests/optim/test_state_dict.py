"""state_dict, serialisation and loading.

A resumed run must be the same run: every comparison here is bitwise (``torch.equal``), step by step.
"""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import cases
import pytest
import torch
from cases import ALL_FEATURES, CLASSES, MLPProblem, assert_snapshots_equal, snapshot

import sfplus._base

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SETTINGS = [pytest.param({}, id="default"), pytest.param(ALL_FEATURES, id="all_features")]
BACKFILLED_HYPERPARAMETERS = {"nonfinite": "skip", "foreach": None, "max_step": None, "loss_floor": 0.0}


def _step(opt: torch.optim.Optimizer, problem: MLPProblem, *, poison: bool = False) -> None:
    opt.zero_grad()
    loss = problem.loss()
    loss.backward()
    if poison:  # a non-finite loss: skipped, counted (so num_skipped is part of what must round-trip)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt.step(loss=float("nan"))
    else:
        opt.step(loss=loss)


def _prime(cls: type, kwargs: dict[str, Any], seed: int = 0, steps: int = 10) -> tuple[MLPProblem, Any]:
    problem = MLPProblem.make(torch.Generator().manual_seed(seed))
    opt = cls(problem.groups(group1_lr=0.5), **kwargs)
    for i in range(steps):
        _step(opt, problem, poison=(i == 4))
        if i == 6:
            opt.eval()
            opt.train()
    return problem, opt


def _clone_problem(problem: MLPProblem) -> MLPProblem:
    return MLPProblem(
        params={n: torch.nn.Parameter(p.detach().clone()) for n, p in problem.params.items()},
        inputs=problem.inputs,
        targets=problem.targets,
    )


def _assert_state_dicts_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for pid in a["state"]:
        sa, sb = a["state"][pid], b["state"][pid]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), f"param {pid} {key}"


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("kwargs", SETTINGS)
def test_round_trip_runs_in_lockstep(cls, kwargs):
    problem, opt = _prime(cls, kwargs)
    twin_problem = _clone_problem(problem)
    twin = cls(twin_problem.groups(group1_lr=0.5), **kwargs)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    group = twin.param_groups[0]
    assert (group["k"], group["num_skipped"], group["train_mode"]) == (9, 1, True)
    for key in ("k", "e", "weight_sum", "lr_max", "y_beta", "train_mode", "num_skipped"):
        assert [g[key] for g in twin.param_groups] == [g[key] for g in opt.param_groups], key
    for i in range(10):
        _step(opt, problem)
        _step(twin, twin_problem)
        for name, p in problem.params.items():
            assert torch.equal(p, twin_problem.params[name]), f"step {i}: {name}"
        assert opt.stats == twin.stats
    _assert_state_dicts_equal(opt.state_dict(), twin.state_dict())


@pytest.mark.parametrize("cls", CLASSES)
def test_state_dict_in_eval_mode_resumes_in_eval_mode(cls):
    problem, opt = _prime(cls, {})
    opt.eval()
    twin_problem = _clone_problem(problem)
    twin = cls(twin_problem.groups(group1_lr=0.5))
    twin.load_state_dict(opt.state_dict())
    assert not twin.train_mode
    opt.train()
    twin.train()
    for name, p in problem.params.items():
        assert torch.equal(p, twin_problem.params[name])


@pytest.mark.parametrize("cls", CLASSES)
def test_torch_save_load_weights_only(cls):
    _, opt = _prime(cls, ALL_FEATURES)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    _assert_state_dicts_equal(loaded, opt.state_dict())


@pytest.mark.parametrize("cls", CLASSES)
def test_deepcopy_repr_and_pickle(cls):
    problem, opt = _prime(cls, ALL_FEATURES, steps=4)
    clone = copy.deepcopy(opt)
    public = {k: v for k, v in vars(opt).items() if not k.startswith("_") and k not in ("state", "param_groups")}
    assert public.keys() == {k for k in vars(clone) if not k.startswith("_")} - {"state", "param_groups"}
    assert clone.stats == opt.stats
    assert all(clone.defaults[key] == value for key, value in opt.defaults.items())  # torch may add keys
    _assert_state_dicts_equal(clone.state_dict(), opt.state_dict())
    text = repr(opt)
    assert cls.__name__ in text and "sf_beta1_anneal_steps: 6" in text and "Parameter Group 1" in text
    # Pickling the whole optimizer carries its params along: the copy steps like the original.
    restored = pickle.loads(pickle.dumps(opt))
    restored_params = [p for g in restored.param_groups for p in g["params"]]
    twin_problem = MLPProblem(
        params=dict(zip(problem.params, restored_params)), inputs=problem.inputs, targets=problem.targets
    )
    for _ in range(3):
        _step(opt, problem)
        _step(restored, twin_problem)
    for name, p in problem.params.items():
        assert torch.equal(p, twin_problem.params[name])


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("change", ["reordered", "reshaped", "regrouped", "fewer"])
def test_mismatched_load_raises_and_changes_nothing(cls, change):
    source_problem, source = _prime(cls, {})
    saved = source.state_dict()
    problem = MLPProblem.make(torch.Generator().manual_seed(1))
    p = problem.params
    if change == "reordered":
        groups = [{"params": [p["b1"], p["W1"], p["empty"]]}, {"params": [p["W2"], p["b2"]]}]
        expected = r"state '[xd]' for param 0 in group 0 has shape \(8, 4\), expected \(8,\)"
    elif change == "reshaped":
        p["W1"] = torch.nn.Parameter(p["W1"].detach().reshape(4, 8).clone())
        groups = [{"params": [p["W1"], p["b1"], p["empty"]]}, {"params": [p["W2"], p["b2"]]}]
        expected = r"state '[xd]' for param 0 in group 0 has shape \(8, 4\), expected \(4, 8\)"
    elif change == "regrouped":
        groups = [{"params": list(p.values())}]
        expected = r"2 parameter groups, this optimizer has 1"
    else:
        groups = [{"params": [p["W1"], p["b1"]]}, {"params": [p["W2"], p["b2"]]}]
        expected = r"group 0 has 3 parameters, this optimizer's has 2"
    opt = cls(groups)
    loss = problem.loss() if change != "reshaped" else sum((t**2).sum() for t in p.values())
    loss.backward()
    opt.step(loss=loss)  # some state of its own, which a failed load must keep
    before = snapshot(opt)
    with pytest.raises(ValueError, match=expected):
        opt.load_state_dict(saved)
    assert_snapshots_equal(before, snapshot(opt), "after a refused load")


def test_load_does_not_alias_or_mutate_the_argument():
    _, opt = _prime(cases.ScheduleFreePlus, {})
    saved = opt.state_dict()
    kept = copy.deepcopy(saved)
    problem = MLPProblem.make(torch.Generator().manual_seed(0))
    twin = cases.ScheduleFreePlus(problem.groups(group1_lr=0.5))
    twin.load_state_dict(saved)
    for state in twin.state.values():
        for t in state.values():
            t.add_(1.0)  # writing into the loaded state must not reach the caller's dict
    _assert_state_dicts_equal(saved, kept)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_keep_fp32_state_through_load(cls, dtype):
    def make() -> tuple[list[torch.nn.Parameter], Any]:
        gen = torch.Generator().manual_seed(2)
        params = [torch.nn.Parameter(torch.randn(6, 3, generator=gen).to(dtype))]
        return params, cls(params)

    params, opt = make()
    for _ in range(3):
        opt.zero_grad()
        loss = (params[0].float() ** 2).mean()
        loss.backward()
        opt.step(loss=loss)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    params2, twin = make()
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    state = twin.state[params2[0]]
    assert state and all(t.dtype == torch.float32 for t in state.values()), {k: t.dtype for k, t in state.items()}
    assert params2[0].dtype == dtype


# ------------------------------------------------------------------------------- another process
_SAVER = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from cases import ALL_FEATURES, MLPProblem
    import cases
    problem = MLPProblem.make(torch.Generator().manual_seed(0))
    opt = cases.ScheduleFreePlus(problem.groups(group1_lr=0.5), **ALL_FEATURES)
    for _ in range(6):
        opt.step(problem.closure_for(opt))
    torch.save({{"params": {{n: p.detach() for n, p in problem.params.items()}}, "optimizer": opt.state_dict()}},
               {path!r})
    """
)


def test_state_saved_in_another_process_resumes_in_lockstep(tmp_path):
    path = tmp_path / "checkpoint.pt"
    script = _SAVER.format(tests=str(Path(__file__).resolve().parents[1]), path=str(path))
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    checkpoint = torch.load(path, weights_only=True)
    # The uninterrupted run, in this process.
    problem = MLPProblem.make(torch.Generator().manual_seed(0))
    opt = cases.ScheduleFreePlus(problem.groups(group1_lr=0.5), **ALL_FEATURES)
    for _ in range(6):
        opt.step(problem.closure_for(opt))
    resumed = MLPProblem.make(torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, p in resumed.params.items():
            p.copy_(checkpoint["params"][name])
    twin = cases.ScheduleFreePlus(resumed.groups(group1_lr=0.5), **ALL_FEATURES)
    twin.load_state_dict(checkpoint["optimizer"])
    for i in range(5):
        opt.step(problem.closure_for(opt))
        twin.step(resumed.closure_for(twin))
        for name, p in problem.params.items():
            assert torch.equal(p, resumed.params[name]), f"step {i}: {name}"


# ------------------------------------------------------------------------------- compatibility
def test_v1_state_dict_loads_and_steps():
    """``tests/assets/state_dict_v1.pt`` (made by make_state_dict_v1.py with sfplus 0.1.0) still loads."""
    sys.path.insert(0, str(ASSETS))
    try:
        import make_state_dict_v1 as v1
        import make_v1_resume_trajectory as trajectory
    finally:
        sys.path.remove(str(ASSETS))
    saved, problem, opt = trajectory.load_v1()
    assert saved["sfplus_version"] == "0.1.0"
    assert opt.param_groups[0]["k"] == v1.NUM_STEPS
    for _ in range(3):
        opt.step(problem.closure_for(opt))
    assert opt.stats["status"] == "ok" and opt.param_groups[0]["k"] == v1.NUM_STEPS + 3
    assert all(torch.isfinite(p).all() for p in problem.params.values())


def test_v1_state_dict_resumes_on_the_format_1_trajectory():
    """The 0.1.0 state dict, resumed by this code, follows the trajectory the format-1 code (z in the state)
    took from it (``v1_resume_trajectory.pt``, made by make_v1_resume_trajectory.py at commit f8ca7ce).

    Tolerance: on load z becomes d = z - y, one rounding (float64, about 1e-16 of |z|), and the two codes
    round the update differently afterwards (y + B·w + (1-A)·d rather than y_self·y + y_z·z' + y_znew·z_k).
    The parameters are held to 1e-10 relative, the float64 tolerance of the parity tests; measured when this
    test was written: at most 9.4e-16 of a tensor's largest element over the 10 steps.
    """
    sys.path.insert(0, str(ASSETS))
    try:
        import make_v1_resume_trajectory as trajectory
    finally:
        sys.path.remove(str(ASSETS))
    want = torch.load(ASSETS / "v1_resume_trajectory.pt", weights_only=True)
    assert want["state_format"] == 1
    params, alphas = trajectory.resume()
    assert len(params) == len(want["params"]) == trajectory.NUM_STEPS
    for step, (got, expected) in enumerate(zip(params, want["params"])):
        for name, p in got.items():
            assert p.dtype == torch.float64
            torch.testing.assert_close(p, expected[name], rtol=1e-10, atol=1e-12, msg=f"step {step}: {name}")
    for a, b in zip(alphas, want["alphas"]):
        assert a == pytest.approx(b, rel=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_format_1_state_dict_resumes_like_the_run_it_came_from(dtype, mode):
    """A state dict with z (format 1, as the fast class saved it before keeping d = z - y) loads: d = z - y
    from the parameter (train mode) or the kept y (eval mode), and the run goes on as the uninterrupted one.

    Tolerance: z = y + d was rounded when the format-1 dict was made, and d = z - y again on load, so d is
    off by a few ulp of |z|. Held to 1e-10 relative in float64 and 1e-5 in float32 (the rounding of
    y + (z - y), grown by the steps; not a difference in the update). Measured when this test was written:
    at most 1.7e-16 (float64) and 1.8e-7 (float32) of a tensor's largest element over the 10 steps."""
    problem = MLPProblem.make(torch.Generator().manual_seed(7), dtype=dtype)
    opt = cases.ScheduleFreePlus(problem.groups(group1_lr=0.5), **ALL_FEATURES)
    for _ in range(6):
        opt.step(problem.closure_for(opt))
    if mode == "eval":
        opt.eval()
    saved = cases.format_1_state_dict(opt)
    assert all("z" in entry and "d" not in entry for entry in saved["state"].values() if entry)
    twin_problem = _clone_problem(problem)
    twin = cases.ScheduleFreePlus(twin_problem.groups(group1_lr=0.5), **ALL_FEATURES)
    twin.load_state_dict(saved)
    assert all(sorted(s) == (["d", "m", "v"] if mode == "train" else ["d", "m", "v", "y"]) for s in twin.state.values())
    assert all(g["state_format"] == sfplus._base.STATE_FORMAT for g in twin.param_groups)
    if mode == "eval":
        opt.train()
        twin.train()
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for step in range(10):
        opt.step(problem.closure_for(opt))
        twin.step(twin_problem.closure_for(twin))
        for name, p in problem.params.items():
            torch.testing.assert_close(twin_problem.params[name], p, **tol, msg=f"step {step}: {name}")


def test_a_newer_state_format_is_refused():
    _, opt = _prime(cases.ScheduleFreePlus, {}, steps=2)
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        group["state_format"] = sfplus._base.STATE_FORMAT + 1
    problem = MLPProblem.make(torch.Generator().manual_seed(0))
    twin = cases.ScheduleFreePlus(problem.groups(group1_lr=0.5))
    before = snapshot(twin)
    with pytest.raises(ValueError, match=r"state_format 3; this version of sfplus reads formats 1 to 2"):
        twin.load_state_dict(saved)
    assert_snapshots_equal(before, snapshot(twin), "after a refused load")


def test_state_dict_carries_its_format():
    _, opt = _prime(cases.ScheduleFreePlus, {}, steps=2)
    saved = opt.state_dict()
    assert [g["state_format"] for g in saved["param_groups"]] == [2, 2]
    assert all(sorted(entry) == ["d", "m", "v"] for entry in saved["state"].values() if entry)


@pytest.mark.parametrize("cls", CLASSES)
def test_missing_optional_keys_are_backfilled(cls):
    """Group keys added after v1 may be absent from an old state dict: they load with their defaults."""
    problem, opt = _prime(cls, {})
    full = opt.state_dict()
    stripped = copy.deepcopy(full)
    for group in stripped["param_groups"]:
        for key in BACKFILLED_HYPERPARAMETERS:
            del group[key]
    twins = []
    for state_dict in (full, stripped):
        twin_problem = _clone_problem(problem)
        twin = cls(twin_problem.groups(group1_lr=0.5))
        twin.load_state_dict(state_dict)
        twins.append((twin_problem, twin))
    for key, default in BACKFILLED_HYPERPARAMETERS.items():
        assert all(g[key] == default for g in twins[1][1].param_groups), key
    for _ in range(3):
        for twin_problem, twin in twins:
            _step(twin, twin_problem)
    for name, p in twins[0][0].params.items():
        assert torch.equal(p, twins[1][0].params[name])


@pytest.mark.parametrize("cls", CLASSES)
def test_fresh_state_dict_without_run_state_backfills_fresh_values(cls):
    problem = MLPProblem.make(torch.Generator().manual_seed(0))
    opt = cls(problem.groups(), **ALL_FEATURES)
    stripped = opt.state_dict()
    run_state = ("k", "e", "num_skipped", "train_mode", "y_beta", "lr_max", "weight_sum")
    for group in stripped["param_groups"]:
        for key in run_state:
            del group[key]
    twin = cls(_clone_problem(problem).groups(), **ALL_FEATURES)
    twin.load_state_dict(stripped)
    for got, want in zip(twin.param_groups, opt.param_groups):
        assert {k: got[k] for k in run_state} == {k: want[k] for k in run_state}


@pytest.mark.parametrize("source, target", [CLASSES, CLASSES[::-1]], ids=["fast_into_ref", "ref_into_fast"])
def test_state_dict_of_the_other_class_is_refused(source, target):
    _, opt = _prime(source, {}, steps=3)
    problem = MLPProblem.make(torch.Generator().manual_seed(0))
    twin = target(problem.groups(group1_lr=0.5))
    before = snapshot(twin)
    expected = r"lacks 'x'" if target is cases.ScheduleFreePlusReference else r"unexpected keys \['x', 'y'\]"
    with pytest.raises(ValueError, match=rf"state for param 0 in group 0 .*{expected}"):
        twin.load_state_dict(opt.state_dict())
    assert_snapshots_equal(before, snapshot(twin), "after a refused load")


def test_state_for_an_unlisted_parameter_is_refused():
    _, opt = _prime(cases.ScheduleFreePlus, {}, steps=2)
    saved = opt.state_dict()
    saved["state"][99] = saved["state"][0]
    problem = MLPProblem.make(torch.Generator().manual_seed(0))
    twin = cases.ScheduleFreePlus(problem.groups(group1_lr=0.5))
    with pytest.raises(ValueError, match="state for parameter id 99, which no group lists"):
        twin.load_state_dict(saved)
    assert not any(twin.state.values())
