"""``sfplus_lab.distributed`` in one process: without torchrun nothing communicates; bad env is a UserError."""

from __future__ import annotations

import pytest
import torch

from sfplus_lab import distributed as LD
from sfplus_lab.errors import UserError

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_process_without_torchrun(no_torchrun):
    ctx = LD.init("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    model = torch.nn.Linear(2, 2)
    assert LD.wrap_model(model, ctx) is model
    assert LD.unwrap_model(model) is model
    assert LD.all_reduce_sums([1.5, 2], ctx) == [1.5, 2.0]
    assert LD.any_rank(True, ctx) is True
    LD.barrier(ctx)
    LD.shutdown(ctx)


def test_world_size_one_is_one_process(no_torchrun):
    no_torchrun.setenv("WORLD_SIZE", "1")
    assert LD.init("cpu") == LD.DistContext()


def test_partial_torchrun_environment_is_a_user_error(no_torchrun):
    no_torchrun.setenv("WORLD_SIZE", "2")
    no_torchrun.setenv("RANK", "0")
    with pytest.raises(UserError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT is not: start .* with torchrun"):
        LD.init("cpu")


def test_non_integer_rank_is_a_user_error(no_torchrun):
    no_torchrun.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE='two' is not an integer"):
        LD.init("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_user_error(no_torchrun):
    for name, val in zip(TORCHRUN_VARS, ("0", "0", "2", "127.0.0.1", "29500")):
        no_torchrun.setenv(name, val)
    with pytest.raises(UserError, match="CUDA is not available"):
        LD.init("cuda")
