"""The only module that touches ``torch.distributed``.

ScheduleFree+ needs three global scalars per step (docs/algorithm.md, "Policies": global scalars):
the loss F as the mean over the data-parallel ranks, and the sums I = β̃⟨g, z-x⟩ and L = ‖g‖₁ over
every element of every parameter counted exactly once. All of them travel in one float64
``all_reduce(SUM)``:

- F enters as ``F_local / world``, so the sum is the mean.
- A plain (replicated, DDP-style) tensor holds the same gradient on every rank: its contribution
  enters as ``value / world``, so the sum counts it once, and every rank ends with the same bits.
- A DTensor (FSDP2, tensor parallel, HSDP) contributes the statistics of its *local shard* times
  ``num_shards / world``, where ``num_shards`` is the product of the mesh sizes over its
  non-``Replicate`` dimensions: each element is held by ``world / num_shards`` ranks (replicas on
  the mesh, and copies of the mesh elsewhere in the group), so the sum counts it once.

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


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def is_dtensor(t: torch.Tensor) -> bool:
    # Called for every tensor of every step: a plain tensor (the common case) answers without
    # asking torch.distributed anything. Only a tensor subclass can be a DTensor.
    if type(t) in _PLAIN or _dist() is None:
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The rank-local data of ``t`` (its shard for a DTensor, itself otherwise); shares storage."""
    return t._local_tensor if is_dtensor(t) else t


def contribution_scale(t: torch.Tensor, world: int) -> float:
    """Factor applied to this rank's per-tensor statistic so a SUM over ``world`` ranks counts it once.

    For a DTensor, every mesh dimension whose placement is not ``Replicate`` splits the tensor
    (``Shard``, and also ``_StridedShard``, which FSDP2 uses on top of tensor parallelism and which is
    not a ``Shard`` subclass), so ``num_shards`` is the product of those dimensions' sizes. The
    gradient must be laid out like the parameter: the statistics pair local gradient elements with
    local state elements.
    """
    if not is_dtensor(t):
        return 1.0 / world
    grad = t.grad
    if grad is not None and is_dtensor(grad) and tuple(grad.placements) != tuple(t.placements):
        raise RuntimeError(
            f"ScheduleFree+ needs each gradient laid out like its parameter, got a gradient with placements "
            f"{tuple(grad.placements)} for a parameter with {tuple(t.placements)} (a parallelism plan that "
            "leaves gradients Partial must reduce them before optimizer.step())"
        )
    num_shards = 1
    for dim, placement in enumerate(t.placements):
        if not placement.is_replicate():
            num_shards *= t.device_mesh.size(dim)
    if num_shards > world:
        raise RuntimeError(
            f"a parameter is split into {num_shards} shards but the optimizer's process group has only {world} "
            "ranks: pass process_group=None (the world) or a group that holds every shard"
        )
    return num_shards / world


def all_reduce_sum(stats: torch.Tensor, group: Any, world: int) -> torch.Tensor:
    """One SUM collective over ``group`` of the float64 statistics vector (a no-op for world 1).

    The vector stays on the gradients' device; only a CPU vector meeting a backend that reduces
    device tensors alone (NCCL, and the like) is moved to the current accelerator and back.
    """
    if world == 1:
        return stats
    dist = _dist()
    buffer = stats
    if stats.device.type == "cpu" and not _reduces_cpu_tensors(dist.get_backend(group)):
        buffer = stats.to(_accelerator())
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
    return buffer.to(stats.device)


def _reduces_cpu_tensors(backend: Any) -> bool:
    """gloo and MPI reduce CPU tensors; a mixed backend string such as ``cpu:gloo,cuda:nccl`` names ``cpu``."""
    name = str(backend).lower()
    return any(key in name for key in ("gloo", "mpi", "cpu:"))


def _accelerator() -> torch.device:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.current_accelerator() is not None:
        device = accelerator.current_accelerator()
        return torch.device(device.type, accelerator.current_device_index())
    return torch.device("cuda", torch.cuda.current_device())
