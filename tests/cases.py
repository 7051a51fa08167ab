"""The tables every optimizer test runs over (the analogue of PyTorch's ``OptimizerInfo``), and small problems.

``OPTIMIZER_CASES`` lists constructor settings, each with a ``desc`` and capability flags; a property
test parametrises over it, so adding a setting here tests it everywhere. ``ERROR_CASES`` lists bad
constructor arguments with the exception type and message each must raise.

The problems at the bottom are deterministic functions of a ``torch.Generator``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import sfplus


class ScheduleFreePlus(sfplus.ScheduleFreePlus):
    """The fast class through ``sfplus.PAPER``: what these tests hold to the paper's exact update.

    Same name as the library's class, so every message the tests match reads the same.
    """

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **{**sfplus.PAPER, **kwargs})


class ScheduleFreePlusReference(sfplus.ScheduleFreePlusReference):
    """The reference class through ``sfplus.PAPER``."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **{**sfplus.PAPER, **kwargs})


CLASSES = (ScheduleFreePlus, ScheduleFreePlusReference)

#: Every feature on at once: warmup, annealing, AdamC decay, polyak_beta, averaging warm start, r and a cap
#: (the paper's LLM settings with horizons short enough for a few-step test).
ALL_FEATURES: dict[str, Any] = dict(
    lr=1.0,
    warmup_steps=3,
    betas=(0.9, 0.95),
    weight_decay=10.0,
    sf_beta1=0.8,
    sf_beta1_max=0.965,
    sf_beta1_anneal_steps=6,
    polyak_beta=0.9,
    c_warmup=2,
    r=1.0,
)


@dataclass(frozen=True)
class OptimizerCase:
    """One constructor setting, and what a test can tell from it (``anneals``). Every setting has a
    multi-tensor path, needs the loss and refuses complex parameters, so no flag says so."""

    desc: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: β̃ changes from step to step, so a frozen parameter's y is rebuilt (test_parity checks both ways)
    anneals: bool = False

    def make(self, cls: type, params: Any, **overrides: Any) -> torch.optim.Optimizer:
        return cls(params, **{**self.kwargs, **overrides})


OPTIMIZER_CASES: tuple[OptimizerCase, ...] = (
    OptimizerCase("default"),
    OptimizerCase("polyak_ema", dict(polyak_beta=0.9)),
    # α²λ must stay below 1 for the decay to contract; toy problems have α near 0.1-1 (LLMs: about 1e-3), so
    # the paper's λ = 10-50 overshoots here within a few steps. all_features keeps λ = 10 behind a warmup.
    OptimizerCase("adamc_decay", dict(weight_decay=2.0)),
    OptimizerCase("anneal", dict(sf_beta1=0.8, sf_beta1_anneal_steps=5), anneals=True),
    OptimizerCase("warm_start_r1", dict(c_warmup=3, r=1.0)),
    OptimizerCase("warmup", dict(warmup_steps=4)),
    OptimizerCase("capped", dict(max_step=0.02)),
    OptimizerCase("lr_half_power1", dict(lr=0.5, weight_lr_power=1.0)),
    OptimizerCase("loss_floor", dict(loss_floor=0.01)),
    OptimizerCase("betas_eps", dict(betas=(0.8, 0.99), eps=1e-6, sf_beta1=0.5)),
    OptimizerCase("all_features", ALL_FEATURES, anneals=True),
)


def state_z(opt: torch.optim.Optimizer, p: torch.Tensor) -> torch.Tensor:
    """The base iterate z of ``p``: the reference's stored z, or the fast class's y + d (it keeps d = z - y)."""
    state = opt.state[p]
    return state["z"] if "z" in state else opt.z_values()[p]


def format_1_state_dict(opt: sfplus.ScheduleFreePlus) -> dict[str, Any]:
    """``opt.state_dict()`` as the fast class saved it in state format 1 (version 0.1.0 up to format 2):
    ``z`` = y + d instead of ``d``, and no ``state_format`` in the groups."""
    saved = copy.deepcopy(opt.state_dict())
    params = [p for group in opt.param_groups for p in group["params"]]
    zs = opt.z_values()
    for pid, entry in saved["state"].items():
        if "d" in entry:
            del entry["d"]
            entry["z"] = zs[params[pid]].clone()
    for group in saved["param_groups"]:
        del group["state_format"]
    return saved


def case_params(cases: tuple[OptimizerCase, ...] = OPTIMIZER_CASES) -> list[Any]:
    """``pytest.param`` objects with readable ids."""
    return [pytest.param(case, id=case.desc) for case in cases]


@dataclass(frozen=True)
class ErrorCase:
    """Bad constructor kwargs, the exception they raise and a regex its message must match."""

    desc: str
    kwargs: dict[str, Any]
    error: type[Exception]
    match: str


NAN, INF = math.nan, math.inf

ERROR_CASES: tuple[ErrorCase, ...] = (
    ErrorCase("lr_negative", dict(lr=-1.0), ValueError, r"Invalid learning rate: -1\.0"),
    ErrorCase("lr_nan", dict(lr=NAN), ValueError, r"Invalid learning rate: nan"),
    ErrorCase("lr_inf", dict(lr=INF), ValueError, r"Invalid learning rate: inf"),
    ErrorCase("lr_string", dict(lr="1e-3"), ValueError, r"Invalid lr value: '1e-3'"),
    ErrorCase("lr_vector", dict(lr=torch.tensor([1.0, 2.0])), ValueError, r"Invalid lr value"),
    ErrorCase("beta1_one", dict(betas=(1.0, 0.95)), ValueError, r"Invalid beta parameter at index 0: 1\.0"),
    ErrorCase("beta2_negative", dict(betas=(0.9, -0.1)), ValueError, r"Invalid beta parameter at index 1: -0\.1"),
    ErrorCase("beta1_nan", dict(betas=(NAN, 0.95)), ValueError, r"Invalid beta parameter at index 0: nan"),
    ErrorCase("betas_single", dict(betas=(0.9,)), ValueError, r"Invalid betas value"),
    ErrorCase("eps_zero", dict(eps=0.0), ValueError, r"Invalid eps value: 0\.0"),
    ErrorCase("eps_negative", dict(eps=-1e-8), ValueError, r"Invalid eps value"),
    ErrorCase("eps_nan", dict(eps=NAN), ValueError, r"Invalid eps value: nan"),
    ErrorCase("eps_inf", dict(eps=INF), ValueError, r"Invalid eps value: inf"),
    ErrorCase("wd_negative", dict(weight_decay=-1.0), ValueError, r"Invalid weight_decay value: -1\.0"),
    ErrorCase("wd_nan", dict(weight_decay=NAN), ValueError, r"Invalid weight_decay value: nan"),
    ErrorCase("wd_inf", dict(weight_decay=INF), ValueError, r"Invalid weight_decay value: inf"),
    ErrorCase("warmup_negative", dict(warmup_steps=-1), ValueError, r"Invalid warmup_steps value: -1"),
    ErrorCase("warmup_float", dict(warmup_steps=2.5), TypeError, r"Invalid warmup_steps value: 2\.5"),
    ErrorCase("warmup_bool", dict(warmup_steps=True), TypeError, r"Invalid warmup_steps value: True"),
    ErrorCase("sf_beta1_zero", dict(sf_beta1=0.0), ValueError, r"Invalid sf_beta1 value: 0\.0"),
    ErrorCase("sf_beta1_one", dict(sf_beta1=1.0), ValueError, r"Invalid sf_beta1 value: 1\.0"),
    ErrorCase("sf_beta1_nan", dict(sf_beta1=NAN), ValueError, r"Invalid sf_beta1 value: nan"),
    ErrorCase("sf_beta1_max_one", dict(sf_beta1_max=1.0), ValueError, r"Invalid sf_beta1_max value: 1\.0"),
    ErrorCase(
        "sf_beta1_max_below",
        dict(sf_beta1=0.9, sf_beta1_max=0.5, sf_beta1_anneal_steps=10),
        ValueError,
        r"Invalid sf_beta1_max value: 0\.5 .*>= sf_beta1",
    ),
    ErrorCase("anneal_float", dict(sf_beta1_anneal_steps=10.0), TypeError, r"Invalid sf_beta1_anneal_steps value"),
    ErrorCase("anneal_negative", dict(sf_beta1_anneal_steps=-5), ValueError, r"Invalid sf_beta1_anneal_steps value"),
    ErrorCase("c_warmup_negative", dict(c_warmup=-1), ValueError, r"Invalid c_warmup value: -1"),
    ErrorCase("c_warmup_float", dict(c_warmup=1.5), TypeError, r"Invalid c_warmup value: 1\.5"),
    ErrorCase("polyak_beta_one", dict(polyak_beta=1.0), ValueError, r"Invalid polyak_beta value: 1\.0"),
    ErrorCase("polyak_beta_negative", dict(polyak_beta=-0.1), ValueError, r"Invalid polyak_beta value: -0\.1"),
    ErrorCase("polyak_beta_nan", dict(polyak_beta=NAN), ValueError, r"Invalid polyak_beta value: nan"),
    ErrorCase("r_negative", dict(r=-1.0), ValueError, r"Invalid r value: -1\.0"),
    ErrorCase("r_inf", dict(r=INF), ValueError, r"Invalid r value: inf"),
    ErrorCase("weight_lr_power_nan", dict(weight_lr_power=NAN), ValueError, r"Invalid weight_lr_power value: nan"),
    ErrorCase("loss_floor_inf", dict(loss_floor=-INF), ValueError, r"Invalid loss_floor value: -inf"),
    ErrorCase("loss_floor_nan", dict(loss_floor=NAN), ValueError, r"Invalid loss_floor value: nan"),
    ErrorCase("max_step_zero", dict(max_step=0.0), ValueError, r"Invalid max_step value: 0\.0"),
    ErrorCase("max_step_negative", dict(max_step=-1.0), ValueError, r"Invalid max_step value: -1\.0"),
    ErrorCase("max_step_inf", dict(max_step=INF), ValueError, r"Invalid max_step value: inf"),
    ErrorCase("max_step_nan", dict(max_step=NAN), ValueError, r"Invalid max_step value: nan"),
    ErrorCase("nonfinite_unknown", dict(nonfinite="ignore"), ValueError, r"Invalid nonfinite value: 'ignore'"),
    ErrorCase("foreach_string", dict(foreach="yes"), TypeError, r"Invalid foreach value: 'yes'"),
    ErrorCase("foreach_int", dict(foreach=1), TypeError, r"Invalid foreach value: 1"),
    ErrorCase("fused_string", dict(fused=1), TypeError, r"Invalid fused value: 1"),
    ErrorCase("foreach_and_fused", dict(foreach=True, fused=True), RuntimeError, r"`foreach` and `fused`"),
)


def error_params() -> list[Any]:
    return [pytest.param(case, id=case.desc) for case in ERROR_CASES]


# ---------------------------------------------------------------------------------------- problems
def quadratic_params(gen: torch.Generator, *, contiguous: bool = True, dtype: torch.dtype = torch.float64):
    """``(W, b)`` for the realizable problem ``mean((W·a + b)²)`` (minimum 0 at W = 0, b = 0)."""
    if contiguous:
        W = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    else:
        W = torch.randn(5, 4, generator=gen, dtype=torch.float64).t()  # a transposed view: strides (1, 4)
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    return torch.nn.Parameter(W.to(dtype)), torch.nn.Parameter(b.to(dtype))


def quadratic_loss(W: torch.Tensor, b: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    return ((inputs @ W.t() + b) ** 2).mean()


@dataclass
class MLPProblem:
    """A teacher-student regression MLP with awkward parameters: a zero-size tensor, a non-contiguous one.

    Two groups: group 0 holds ``W1``, ``b1`` and a zero-size tensor; group 1 holds a non-contiguous
    ``W2`` and ``b2`` (with its own lr multiplier). The targets come from a teacher of the same shape, so
    the problem is realizable (minimum 0) and the Polyak step stays bounded.
    """

    params: dict[str, torch.nn.Parameter]
    inputs: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def make(cls, gen: torch.Generator, dtype: torch.dtype = torch.float64, n: int = 32) -> MLPProblem:
        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        inputs = rand(n, 4)
        teacher = [rand(8, 4), rand(8) * 0.1, rand(3, 8) / 3, rand(3) * 0.1]
        with torch.no_grad():
            targets = torch.tanh(inputs @ teacher[0].t() + teacher[1]) @ teacher[2].t() + teacher[3]
        params = {
            "W1": rand(8, 4) * 0.5,
            "b1": torch.zeros(8, dtype=torch.float64),
            "empty": torch.zeros(0, dtype=torch.float64),
            "W2": (rand(8, 3) / 3).t(),  # non-contiguous
            "b2": torch.zeros(3, dtype=torch.float64),
        }
        return cls(
            params={name: torch.nn.Parameter(t.to(dtype)) for name, t in params.items()},
            inputs=inputs.to(dtype),
            targets=targets.to(dtype),
        )

    def groups(self, group1_lr: float | None = None) -> list[dict[str, Any]]:
        p = self.params
        group1: dict[str, Any] = {"params": [p["W2"], p["b2"]]}
        if group1_lr is not None:
            group1["lr"] = group1_lr
        return [{"params": [p["W1"], p["b1"], p["empty"]]}, group1]

    def loss(self) -> torch.Tensor:
        p = self.params
        hidden = torch.tanh(self.inputs @ p["W1"].t() + p["b1"])
        out = hidden @ p["W2"].t() + p["b2"]
        return ((out - self.targets) ** 2).mean() + p["empty"].sum()

    def closure_for(self, opt: torch.optim.Optimizer) -> Callable[[], torch.Tensor]:
        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = self.loss()
            loss.backward()
            return loss

        return closure


def snapshot(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """A deep copy of everything that changes: params, every state tensor, every group entry but params."""
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = [
        {key: (v.clone() if isinstance(v, torch.Tensor) else v) for key, v in opt.state[p].items()}
        for g in opt.param_groups
        for p in g["params"]
    ]
    groups = [{key: v for key, v in g.items() if key != "params"} for g in opt.param_groups]
    return {"params": params, "state": state, "groups": groups}


def assert_snapshots_equal(a: dict[str, Any], b: dict[str, Any], what: str = "") -> None:
    """Bitwise equality of two snapshots (tensors with ``torch.equal``, NaN-free scalars with ``==``)."""
    assert len(a["params"]) == len(b["params"])
    for i, (pa, pb) in enumerate(zip(a["params"], b["params"])):
        assert pa.dtype == pb.dtype and torch.equal(pa, pb), f"{what}: param {i} differs"
    for i, (sa, sb) in enumerate(zip(a["state"], b["state"])):
        assert sa.keys() == sb.keys(), f"{what}: state keys of param {i}: {sorted(sa)} vs {sorted(sb)}"
        for key in sa:
            va, vb = sa[key], sb[key]
            if isinstance(va, torch.Tensor):
                assert va.dtype == vb.dtype and torch.equal(va, vb), f"{what}: state {key!r} of param {i} differs"
            else:
                assert va == vb, f"{what}: state {key!r} of param {i}: {va!r} vs {vb!r}"
    assert a["groups"] == b["groups"], f"{what}: group entries differ"
