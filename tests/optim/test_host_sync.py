"""No host synchronisation in a fast-path step, and ``capturable=True``
(docs/algorithm.md, "Host synchronisation and capture").

A step of the foreach or the compiled (fused) path with a tensor loss must never read a device value
back to the host: every scalar (β̃, α with its safeguards, c, the skip decision) is a 0-D tensor. On
CPU there is no device to wait for, so the test makes every way of reading a tensor's value into Python
(``item``, ``tolist``, ``cpu``, ``numpy``, ``bool``, ``float``, ``int``) raise during the step: a step
that needed one would fail here exactly where it would stall a GPU. ``optimizer.stats`` is read after
the step, outside the patch: that is where the host values come from.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from cases import ALL_FEATURES, MLPProblem, snapshot

import sfplus

_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


class HostSync(AssertionError):
    pass


def _forbid_host_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _READS:

        def refuse(self, *args, _name=name, **kwargs):
            raise HostSync(f"torch.Tensor.{_name} called during a step: a host synchronisation")

        monkeypatch.setattr(torch.Tensor, name, refuse)


PATHS = [pytest.param(dict(foreach=True), id="foreach"), pytest.param(dict(fused=True), id="fused")]
PRESETS = [pytest.param({}, id="robust"), pytest.param(dict(sfplus.PAPER), id="paper")]


def _compiles() -> bool:
    return not sfplus.functional._compile_failed


def _loss_and_backward(problem: MLPProblem, opt: torch.optim.Optimizer, *, nan_grad: bool = False) -> torch.Tensor:
    opt.zero_grad()
    loss = problem.loss()
    loss.backward()
    if nan_grad:
        problem.params["W2"].grad[0, 1] = math.nan
    return loss.detach()


@pytest.mark.parametrize("capturable", [False, True], ids=["plain", "capturable"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("path", PATHS)
def test_a_fast_step_makes_no_host_sync(path, preset, capturable, monkeypatch):
    monkeypatch.setattr(sfplus.functional, "_compile_failed", False)
    problem = MLPProblem.make(torch.Generator().manual_seed(70))
    opt = sfplus.ScheduleFreePlus(problem.groups(group1_lr=0.5), **preset, **path, capturable=capturable)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed compile would fall back with a warning
        try:
            opt.step(loss=_loss_and_backward(problem, opt))  # the first step allocates state (and compiles)
        except RuntimeWarning as exc:
            pytest.skip(f"torch.compile is unavailable here: {exc}")
    # The same six steps twice: first unwatched, so that the fused path compiles every graph they need (the frozen
    # layer's step is a new set of tensors: compiling it reads constants back, once, which is not a step's sync);
    # then watched, where no host read may happen and the compiled path must still be the one running (a compile
    # failing there would fall back to the eager paths, and the test would check those instead).
    for watched in (False, True):
        statuses = []
        for i in range(6):
            loss = _loss_and_backward(problem, opt, nan_grad=(i == 2))
            if i == 4:
                problem.params["W1"].grad = None  # a frozen layer: its y is rebuilt (annealing) on device too
            with monkeypatch.context() as patch:
                if watched:
                    _forbid_host_reads(patch)
                opt.step(loss=loss if i != 3 else loss * math.inf)  # step 3: a non-finite loss, skipped
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the deferred "step skipped" warnings
                statuses.append(opt.stats["status"])
        assert statuses == ["ok", "ok", "skipped_nonfinite", "skipped_nonfinite", "ok", "ok"]
    assert opt.stats["num_skipped"] == 4 and opt.stats["k"] == 9
    assert opt.stats["alpha"] > 0.0
    assert _compiles(), "the compiled path fell back to the eager one during the steps"


def test_a_skip_without_host_sync_changes_nothing(monkeypatch):
    """The skip is a where-select on the device: every tensor and every scalar keeps its bits."""
    problem = MLPProblem.make(torch.Generator().manual_seed(71))
    opt = sfplus.ScheduleFreePlus(problem.groups(), foreach=True, **ALL_FEATURES)
    for _ in range(4):
        opt.step(problem.closure_for(opt))
    before = snapshot(opt)
    loss = _loss_and_backward(problem, opt, nan_grad=True)
    with monkeypatch.context() as patch:
        _forbid_host_reads(patch)
        opt.step(loss=loss)
    after = snapshot(opt)
    for group in after["groups"]:
        assert int(group.pop("num_skipped")) == 1
    for group in before["groups"]:
        assert int(group.pop("num_skipped")) == 0
    for a, b in zip(before["groups"], after["groups"]):
        for key in a:
            va, vb = a[key], b[key]
            same = torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb
            assert same, key
    before["groups"] = after["groups"] = []
    from cases import assert_snapshots_equal

    assert_snapshots_equal(before, after, "skipped step")
    with pytest.warns(RuntimeWarning, match="non-finite gradient at step 5"):
        assert opt.stats["status"] == "skipped_nonfinite"


def test_nonfinite_raise_syncs_and_raises():
    """``nonfinite="raise"`` is the documented exception: it reads the finiteness back, and raises."""
    problem = MLPProblem.make(torch.Generator().manual_seed(72))
    opt = sfplus.ScheduleFreePlus(problem.groups(), foreach=True, nonfinite="raise")
    opt.step(problem.closure_for(opt))
    loss = _loss_and_backward(problem, opt, nan_grad=True)
    with pytest.raises(FloatingPointError, match="non-finite gradient at step 2"):
        opt.step(loss=loss)
    assert int(opt.param_groups[0]["k"]) == 1


# ----------------------------------------------------------------------------------------- capturable
@pytest.mark.parametrize("value", [1, None, "yes", 1.0])
def test_capturable_must_be_a_bool(value):
    with pytest.raises(TypeError, match="Invalid capturable value"):
        sfplus.ScheduleFreePlus([torch.nn.Parameter(torch.zeros(2))], capturable=value)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("path", [pytest.param(dict(foreach=False), id="single"), *PATHS])
def test_capturable_gives_the_same_numbers_in_place(path, preset, monkeypatch):
    """capturable=True: bit for bit the run of capturable=False, with every run-state scalar a 0-D tensor
    on the parameters' device that keeps its address from step to step (what a CUDA graph replays on)."""
    monkeypatch.setattr(sfplus.functional, "_compile_failed", False)
    runs = []
    for capturable in (False, True):
        problem = MLPProblem.make(torch.Generator().manual_seed(73))
        opt = sfplus.ScheduleFreePlus(problem.groups(), **preset, **path, capturable=capturable)
        addresses = []
        trace = []
        for i in range(6):
            loss = _loss_and_backward(problem, opt, nan_grad=(i == 3))
            opt.step(loss=loss)
            addresses.append([id(g[key]) for g in opt.param_groups for key in sfplus._base.RUN_SCALARS])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                trace.append(dict(opt.stats))
        if capturable:
            assert all(a == addresses[0] for a in addresses), "a run-state scalar was replaced, not updated in place"
            for g in opt.param_groups:
                for key in sfplus._base.RUN_SCALARS:
                    assert g[key].dim() == 0 and g[key].device == problem.params["W1"].device
        runs.append((snapshot(opt), trace, opt.state_dict()))
    (a, trace_a, sd_a), (b, trace_b, sd_b) = runs
    for pa, pb in zip(a["params"], b["params"]):
        assert torch.equal(pa, pb)
    for sa, sb in zip(a["state"], b["state"]):
        assert all(torch.equal(sa[key], sb[key]) for key in sa)
    for ga, gb in zip(a["groups"], b["groups"]):
        for key in sfplus._base.RUN_SCALARS:
            assert torch.equal(ga[key], gb[key]), key
    assert repr(trace_a) == repr(trace_b)  # (repr: NaN, the I of a skipped step, equals itself there)
    if path.get("fused"):
        assert _compiles(), "the fused runs fell back to the eager path: the comparison was not of the compiled one"


def test_a_capturable_state_dict_is_a_copy():
    """The step updates the scalars in place with capturable=True: a state dict taken before must not change."""
    problem = MLPProblem.make(torch.Generator().manual_seed(74))
    opt = sfplus.ScheduleFreePlus(problem.groups(), capturable=True)
    opt.step(problem.closure_for(opt))
    saved = opt.state_dict()
    k_saved = saved["param_groups"][0]["k"].clone()
    opt.step(problem.closure_for(opt))
    assert torch.equal(saved["param_groups"][0]["k"], k_saved) and int(opt.param_groups[0]["k"]) == 2
