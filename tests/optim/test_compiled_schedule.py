"""The step's scalar schedule (``_schedule.step_schedule``) as the fused path runs it, ``torch.compile``d.

It must give the eager definition's numbers (up to the last bit of float64: the compiled kernel's
``sqrt`` and ``pow`` are the C library's, which can differ from ATen's by one unit in the last place), and
compile once: a float lr that an LR scheduler changes every step must not recompile it.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from cases import MLPProblem

import sfplus
from sfplus import _schedule as S
from sfplus.functional import run_compiled_schedule


def _compiles() -> bool:
    return not sfplus.functional._compile_failed


def _flat(out, prefix=""):
    if isinstance(out, dict):
        for key, value in out.items():
            yield from _flat(value, f"{prefix}.{key}")
    elif isinstance(out, list):
        for i, value in enumerate(out):
            yield from _flat(value, f"{prefix}[{i}]")
    elif isinstance(out, torch.Tensor):
        yield prefix, out


def _group(**kw):
    values = dict(sf_beta1=0.9, sf_beta1_max=0.965, sf_beta1_anneal_steps=0, warmup_steps=50, max_step=None,
                  c_warmup=0, r=1.0, weight_lr_power=2.0, bounded_decay=True, rows=(0.5, 0.95, 1e-8, True))  # fmt: skip
    values.update(kw)
    return S.GroupConstants(**values)


def test_the_compiled_schedule_equals_the_eager_one():
    if not _compiles():
        pytest.skip("torch.compile is unavailable here")
    const = S.ScheduleConstants(
        0.9, math.sqrt(math.pi / 2), 0.0, 0.0, 0.05, 1.0,
        (_group(rows=(0.9, 0.99, 1e-8, True), sf_beta1_anneal_steps=100, max_step=0.3),
         _group(rows=None, warmup_steps=0, c_warmup=5, bounded_decay=False)),
    )  # fmt: skip
    rng = random.Random(0)

    def t(x, dtype=torch.float64):
        return torch.tensor(x, dtype=dtype)

    for trial in range(40):
        stats = t([rng.uniform(0, 5), rng.uniform(-1, 1), rng.uniform(0, 1e3), rng.uniform(-1, 1), rng.uniform(0, 1e3)])
        if trial % 10 == 9:
            stats[2] = math.inf  # a skipped step
        run = (t(rng.randint(0, 300), torch.int64), t(rng.uniform(0, 1e3)), t(rng.choice([0.0, 1e-4])),
               t(rng.choice([0.0, 1e-4])), t(3, torch.int64))  # fmt: skip
        groups = tuple(
            (t(rng.uniform(0.1, 1)), 20.0, t(rng.uniform(0.85, 0.95)), t(rng.uniform(0, 1e-3)), t(rng.uniform(0, 9)))
            for _ in range(2)
        )
        eager = dict(_flat(S.step_schedule(stats, run, groups, const)))
        compiled = dict(_flat(run_compiled_schedule(stats, run, groups, const)))
        assert eager.keys() == compiled.keys()
        for key, value in eager.items():
            assert compiled[key].shape == value.shape and compiled[key].dtype == value.dtype, key
            torch.testing.assert_close(compiled[key], value, rtol=1e-15, atol=0.0, equal_nan=True, msg=key)


def test_a_changing_float_lr_does_not_recompile_the_schedule(monkeypatch):
    monkeypatch.setattr(sfplus.functional, "_compile_failed", False)
    problem = MLPProblem.make(torch.Generator().manual_seed(5))
    opt = sfplus.ScheduleFreePlus(problem.groups(group1_lr=0.5), fused=True)
    for _ in range(2):  # compiles (the statistics on the second step: the first allocates the state)
        opt.step(problem.closure_for(opt))
    if not _compiles():
        pytest.skip("torch.compile is unavailable here")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(3):
            for group in opt.param_groups:
                group["lr"] = 1.0 / (2 + i)
            opt.step(problem.closure_for(opt))
    assert _compiles()  # a recompile would have raised, and the step fallen back to foreach
    assert opt.stats["k"] == 5 and not opt.stats["skipped"]
