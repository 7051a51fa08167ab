"""The only module that touches ``torch.distributed``.

ScheduleFree+ needs three global scalars per step (ALGORITHM.md, "The three scalars are global"):
the loss F as the mean over the data-parallel ranks, and the sums I = β̃⟨g, z-x⟩ and L = ‖g‖₁ over
every element of every parameter counted exactly once. All of them travel in one float64
``all_reduce(SUM)``:

- F enters as ``F_local / world``, so the sum is the mean.
- A plain (replicated, DDP-style) tensor holds the same gradient on every rank: its contribution
  enters as ``value / world``, so the sum counts it once, and every rank ends with the same bits.
- A DTensor (FSDP2, tensor parallel, HSDP) contributes the statistics of its *local shard* times
  ``num_shards / world``, where ``num_shards`` is the product of the mesh sizes over its ``Shard``
  dimensions: each element is held by ``world / num_shards`` ranks, so the sum counts it once.

Outside an initialised process group (or with a group of one) nothing here communicates.
"""

from __future__ import annotations

from typing import Any

import torch


def _dist():
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    return torch.distributed


def resolve_group(process_group: Any) -> tuple[Any, int]:
    """Return ``(group, world_size)``; world_size 1 means "no communication"."""
    dist = _dist()
    if dist is None:
        return None, 1
    return process_group, dist.get_world_size(process_group)


def is_dtensor(t: torch.Tensor) -> bool:
    dist = _dist()
    if dist is None:
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The rank-local data of ``t`` (its shard for a DTensor, itself otherwise); shares storage."""
    return t._local_tensor if is_dtensor(t) else t


def contribution_scale(t: torch.Tensor, world: int) -> float:
    """Factor applied to this rank's per-tensor statistic so a SUM over ``world`` ranks counts it once."""
    if world == 1:
        return 1.0
    if not is_dtensor(t):
        return 1.0 / world
    from torch.distributed.tensor import Shard

    num_shards = 1
    for dim, placement in enumerate(t.placements):
        if isinstance(placement, Shard):
            num_shards *= t.device_mesh.size(dim)
    return num_shards / world


def all_reduce_sum(stats: torch.Tensor, group: Any, world: int) -> torch.Tensor:
    """One SUM collective over ``group`` of the float64 statistics vector (a no-op for world 1)."""
    if world == 1:
        return stats
    dist = _dist()
    backend = dist.get_backend(group)
    if "nccl" in str(backend).lower():
        # NCCL only reduces device tensors; gloo reduces CPU tensors.
        buffer = stats.to(torch.device("cuda", torch.cuda.current_device()))
    else:
        buffer = stats.cpu()
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
    return buffer.to(stats.device)
