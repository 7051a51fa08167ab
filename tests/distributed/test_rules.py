"""The single-process rules behind the distributed path: no process group, no communication, one process."""

from __future__ import annotations

import cases
import pytest
import torch

from sfplus import _distributed as D


def test_without_a_process_group_nothing_communicates():
    t = torch.zeros(3)
    assert D.resolve_group(None) == (None, 1)
    assert D.contribution_scale(t, 1) == 1.0
    assert D.all_reduce_sum(t, None, 1) is t


def test_a_plain_tensor_is_a_replica():
    assert D.contribution_scale(torch.zeros(3), 4) == 0.25


@pytest.mark.parametrize(
    "backend, cpu_ok", [("gloo", True), ("nccl", False), ("cpu:gloo,cuda:nccl", True), ("mpi", True), ("xccl", False)]
)
def test_which_backends_reduce_cpu_tensors(backend, cpu_ok):
    assert D._reduces_cpu_tensors(backend) is cpu_ok


@pytest.mark.parametrize("cls", [cases.ScheduleFreePlus, cases.ScheduleFreePlusReference])
def test_zero_grad_step_without_loss_only_allocates_state(cls, gen):
    """What torch.distributed.checkpoint.state_dict does to a fresh optimizer before loading into it."""
    model = torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    before = [p.detach().clone() for p in model.parameters()]
    opt = cls(model.parameters(), warmup_steps=2)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    assert opt.step() is None
    assert len(opt.state) == 2 and opt.param_groups[0]["k"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(cases.state_z(opt, p), p) for p in model.parameters())
    model.weight.grad[0, 0] = 1.0
    with pytest.raises(ValueError, match="closure"):
        opt.step()  # a real gradient still needs its loss


def test_step_without_loss_and_without_grads_still_asks_for_the_loss():
    opt = cases.ScheduleFreePlus(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="loss="):
        opt.step()
