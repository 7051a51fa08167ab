"""Data-parallel training for the lab under ``torchrun``: the few calls the trainer makes.

``torchrun --nproc_per_node=N -m sfplus train ...`` starts N copies of the command with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`init` reads them
and joins the process group (NCCL on GPUs, gloo on CPU); without them it returns a one-process
:class:`DistContext` and nothing here communicates, so the trainer calls the same functions
either way. The trainer then:

- wraps the model with :func:`wrap_model` (DDP; parameters stay plain tensors, so ScheduleFree+
  averages the loss and counts replicated gradients once, see ``sfplus._distributed``);
- draws rank-specific batches (``get_batch(..., rank=ctx.rank, world_size=ctx.world_size)``);
- passes each rank's *local* loss to the optimizer, as with any optimizer;
- sums its share of the evaluation with :func:`all_reduce_sums`;
- writes files only where :attr:`DistContext.is_main`, and meets the others at :func:`barrier`
  after a checkpoint, so no rank reads a checkpoint that is still being written;
- ends with :func:`shutdown` (a barrier first: gloo can abort at exit without it).
"""

from __future__ import annotations

import datetime
import gc
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import UserError

__all__ = ["DistContext", "init", "wrap_model", "unwrap_model", "all_reduce_sums", "any_rank", "barrier", "shutdown"]

#: The variables torchrun sets for every process it starts.
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: A collective that waits longer than this fails with an error instead of hanging the job.
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class DistContext:
    """Where this process stands: its rank, the number of ranks, and the device it computes on."""

    rank: int = 0
    """This process's index among all processes, 0 .. world_size - 1."""
    world_size: int = 1
    """How many processes train together (1: no process group, nothing communicates)."""
    local_rank: int = 0
    """This process's index on its machine; picks its GPU."""
    device: str = "cpu"
    """The torch device this rank computes on, e.g. ``cuda:1`` or ``cpu``."""

    @property
    def is_main(self) -> bool:
        """True on the one rank that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def init(device: str | None = None) -> DistContext:
    """Join the torchrun process group if this process was started by torchrun; else a one-process context.

    ``device``: "cuda", "cpu" or None (CUDA when available). With CUDA each rank takes GPU
    ``LOCAL_RANK``; a rank without its GPU is a clear error, not a silent share of GPU 0.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if "WORLD_SIZE" not in os.environ or _env_int("WORLD_SIZE") <= 1:
        return DistContext(device=device)
    missing = [name for name in TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise UserError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start data-parallel runs with torchrun")
    rank, local_rank, world_size = _env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("WORLD_SIZE")
    device = _rank_device(device, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        kwargs = {"device_id": torch.device(device)} if device.startswith("cuda") else {}
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=TIMEOUT, **kwargs)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def _rank_device(device: str, local_rank: int) -> str:
    if not device.startswith("cuda"):
        return device
    if not torch.cuda.is_available():
        raise UserError(f"--device {device} was asked for but CUDA is not available")
    if local_rank >= torch.cuda.device_count():
        raise UserError(
            f"local rank {local_rank} has no GPU (this machine has {torch.cuda.device_count()}): "
            "use --nproc_per_node <= the number of GPUs"
        )
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel over all ranks (the model unchanged in a one-process run).

    Keep handing ``model.parameters()`` of the *wrapped* model (the same tensors) to the optimizer,
    and use :func:`unwrap_model` for ``state_dict`` so checkpoints carry no ``module.`` prefix.

    Buffers are not broadcast: the lab's buffers (rotary tables) are computed identically on every
    rank, and DDP's broadcast would run in the first forward after a training step even under
    ``no_grad``, i.e. in an evaluation pass, where ranks may run different numbers of batches and a
    collective would hang.
    """
    if not ctx.is_distributed:
        return model
    device_ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.13 renamed the switch (the old name warns); older releases only know broadcast_buffers.
    new_name = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if new_name else {"broadcast_buffers": False}
    return ddp(model, device_ids=device_ids, **no_sync)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sums(values: Sequence[float], ctx: DistContext) -> list[float]:
    """Sum each value over the ranks, in float64 and one collective (e.g. summed losses and token counts).

    Divide the reduced loss sum by the reduced count to get the mean over every rank's share.
    """
    if not ctx.is_distributed:
        return [float(v) for v in values]
    buffer = torch.tensor([float(v) for v in values], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.tolist()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if it is True on any (e.g. "a stop signal arrived"), so all ranks act together."""
    if not ctx.is_distributed:
        return bool(flag)
    return all_reduce_sums([1.0 if flag else 0.0], ctx)[0] > 0


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (after rank 0 writes a checkpoint, before others read it)."""
    if ctx.is_distributed:
        dist.barrier()


def shutdown(ctx: DistContext, *, clean: bool = True) -> None:
    """Leave the process group: after a barrier when ``clean`` (gloo can abort at exit without one).

    Drop the DDP-wrapped model before calling this: DDP holds the process group, and a group that
    dies during interpreter shutdown can make gloo abort (SIGABRT, "terminate called without an
    active exception"; 2 of 23 two-rank CPU runs that kept the model alive, 0 of 10 that dropped it).
    After an error pass ``clean=False``: the other ranks may never reach the barrier, so this rank
    leaves at once rather than wait for the collective timeout.
    """
    if ctx.is_distributed and dist.is_initialized():
        gc.collect()
        if clean:
            dist.barrier()
        dist.destroy_process_group()
