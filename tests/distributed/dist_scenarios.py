"""What each gloo rank runs. Every function is ``scenario(rank, world, work_dir) -> picklable result``.

They are module-level so that spawned processes can import them, and they return plain tensors and
floats; the tests (in the parent process, with no process group) compare them with one-process runs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from dist_problem import NUM_STEPS, OPT_KW, OPTIMIZERS, full_params, make_data, make_model, shard_rows, train_steps
from torch import nn

#: Collectives a step could use; a step must call exactly one of them, once.
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce_scatter_tensor", "reduce")


@contextlib.contextmanager
def count_collectives(counts: dict[str, int]) -> Iterator[None]:
    """Count the ``torch.distributed`` collectives called inside the block (by name)."""
    originals = {name: getattr(dist, name) for name in COLLECTIVES}

    def wrap(name: str, fn: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] = counts.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted

    for name, fn in originals.items():
        setattr(dist, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)


def wrap_ddp(model: nn.Module, group: Any = None) -> nn.Module:
    return nn.parallel.DistributedDataParallel(model, process_group=group)


def wrap_fsdp2(model: nn.Module, mesh: Any = None) -> nn.Module:
    """FSDP2: each Linear, then the root, sharded over ``mesh`` (the world by default)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = mesh if mesh is not None else init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _build(wrapper: str, opt_name: str, seed: int = 0) -> tuple[nn.Module, Any]:
    model = make_model(seed)
    model = wrap_ddp(model) if wrapper == "ddp" else wrap_fsdp2(model)
    return model, OPTIMIZERS[opt_name](model.parameters(), **OPT_KW)


def _train_wrapped(wrapper: str, opt_name: str, rank: int, world: int) -> dict[str, Any]:
    inputs, targets = make_data()
    model, opt = _build(wrapper, opt_name)
    counts: dict[str, int] = {}
    orig_step = opt.step

    def counted_step(*args: Any, **kwargs: Any) -> Any:
        with count_collectives(counts):
            return orig_step(*args, **kwargs)

    opt.step = counted_step  # type: ignore[method-assign]
    history = train_steps(model, opt, shard_rows(inputs, rank, world), shard_rows(targets, rank, world), NUM_STEPS)
    y = full_params(model)
    opt.eval()
    x = full_params(model)
    opt.train()
    y_again = full_params(model)
    local_numels = {name: getattr(p, "_local_tensor", p).numel() for name, p in model.named_parameters()}
    return {"x": x, "y": y, "y_again": y_again, "history": history, "collectives": counts, "local": local_numels}


def ddp_fast(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _train_wrapped("ddp", "fast", rank, world)


def ddp_reference(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _train_wrapped("ddp", "reference", rank, world)


def ddp_robust(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _train_wrapped("ddp", "robust", rank, world)


def fsdp2_robust(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _train_wrapped("fsdp2", "robust", rank, world)


def fsdp2_fast(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _train_wrapped("fsdp2", "fast", rank, world)


def fsdp2_reference(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _train_wrapped("fsdp2", "reference", rank, world)


# ---------------------------------------------------------------------------------------------- checkpoints
def _dcp_resume(wrapper: str, opt_name: str, rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """Train 6 steps, save x and the state through DCP, train 6 more; a fresh run loads and must match each step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    inputs, targets = make_data()
    inputs, targets = shard_rows(inputs, rank, world), shard_rows(targets, rank, world)
    model, opt = _build(wrapper, opt_name)
    train_steps(model, opt, inputs, targets, 6)
    opt.eval()  # checkpoints hold x
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=work_dir)
    opt.train()
    original = []
    for _ in range(6):
        original.append(train_steps(model, opt, inputs, targets, 1)[0])
        original[-1]["params"] = full_params(model)

    fresh, fresh_opt = _build(wrapper, opt_name, seed=7)  # different weights: the load must overwrite them
    # The checkpoint is in eval mode: so is the optimizer that loads it, so that the state DCP prepares
    # holds the y that eval() kept aside, and train() below gives back the saved run's y bit for bit.
    fresh_opt.eval()
    model_sd, optim_sd = get_state_dict(fresh, fresh_opt)
    k_before_load = fresh_opt.param_groups[0]["k"]
    to_load = {"model": model_sd, "optim": optim_sd}
    dcp.load(to_load, checkpoint_id=work_dir)
    set_state_dict(fresh, fresh_opt, model_state_dict=to_load["model"], optim_state_dict=to_load["optim"])
    loaded_mode = fresh_opt.train_mode
    fresh_opt.train()
    resumed = []
    for _ in range(6):
        resumed.append(train_steps(fresh, fresh_opt, inputs, targets, 1)[0])
        resumed[-1]["params"] = full_params(fresh)
    return {"original": original, "resumed": resumed, "k_before_load": k_before_load, "loaded_mode": loaded_mode}


def dcp_fsdp2_fast(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _dcp_resume("fsdp2", "fast", rank, world, work_dir)


def dcp_fsdp2_reference(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _dcp_resume("fsdp2", "reference", rank, world, work_dir)


def dcp_ddp_fast(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    return _dcp_resume("ddp", "fast", rank, world, work_dir)


# ---------------------------------------------------------------------------------------------- non-finite
def nonfinite_agreement(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """A NaN loss on rank 1 only (step 3) and an inf in rank 0's gradient shard only (step 5): both ranks skip.

    Returns each step's status and k, the params after all 8 calls (6 finite steps), and whether
    ``nonfinite="raise"`` raised on this rank for a NaN loss that only rank 1 saw.
    """
    inputs, targets = make_data()
    inputs, targets = shard_rows(inputs, rank, world), shard_rows(targets, rank, world)
    model, opt = _build("fsdp2", "fast")
    statuses = []
    for call in range(1, 9):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        if call == 3 and rank == 1:
            loss = torch.full_like(loss, float("nan"))
        if call == 5 and rank == 0:
            next(iter(model.parameters())).grad._local_tensor.view(-1)[0] = float("inf")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "step skipped" on calls 3 and 5
            opt.step(loss=loss)
        statuses.append((opt.stats["status"], opt.param_groups[0]["k"], opt.param_groups[0]["num_skipped"]))
    opt.eval()
    x = full_params(model)

    raising, raise_opt = _build("fsdp2", "fast")
    raise_opt.param_groups[0]["nonfinite"] = "raise"
    raise_opt.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(raising(inputs), targets)
    loss.backward()
    if rank == 1:
        loss = torch.full_like(loss, float("nan"))
    try:
        raise_opt.step(loss=loss)
        raised = False
    except FloatingPointError:
        raised = True
    return {"statuses": statuses, "x": x, "raised": raised, "k_after_raise": raise_opt.param_groups[0]["k"]}


# ---------------------------------------------------------------------------------------------- tensor parallel
def tensor_parallel(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """Megatron-style TP over all ranks: column- then row-sharded weights, and a *replicated* DTensor bias.

    Every rank sees the whole batch (TP ranks share data); the replicated bias must be counted once.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    inputs, targets = make_data()
    mesh = init_device_mesh("cpu", (world,))
    model = parallelize_module(make_model(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    opt = OPTIMIZERS["fast"](model.parameters(), **OPT_KW)
    placements = {name: str(p.placements) for name, p in model.named_parameters()}
    history = train_steps(model, opt, inputs, targets, NUM_STEPS)
    grad_placements = {name: str(p.grad.placements) for name, p in model.named_parameters()}
    opt.eval()
    return {"x": full_params(model), "history": history, "placements": placements, "grad_placements": grad_placements}


# ---------------------------------------------------------------------------------------------- four ranks
def subgroups(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """Two independent data-parallel groups {0, 1} and {2, 3}, each with its own data and ``process_group``.

    Each group must equal a one-process run on its own data, so no statistic leaked across groups.
    """
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]  # every rank creates every group
    index = rank // 2
    group = groups[index]
    inputs, targets = make_data(seed=1 + index)
    local_rank = dist.get_rank(group)
    model = wrap_ddp(make_model(), group=group)
    opt = OPTIMIZERS["fast"](model.parameters(), process_group=group, **OPT_KW)
    reduce_groups: list[Any] = []
    original = dist.all_reduce

    def spy(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        reduce_groups.append(kwargs.get("group", args[1] if len(args) > 1 else None) is group)
        return original(tensor, *args, **kwargs)

    dist.all_reduce = spy
    try:
        inputs, targets = shard_rows(inputs, local_rank, 2), shard_rows(targets, local_rank, 2)
        history = train_steps(model, opt, inputs, targets, NUM_STEPS)
    finally:
        dist.all_reduce = original
    opt.eval()
    return {"data_seed": 1 + index, "x": full_params(model), "history": history, "on_group": reduce_groups}


def hsdp(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """FSDP2 on a 2x2 mesh (replicate, shard): parameters are (Replicate(), Shard(0)) DTensors."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("replicate", "shard"))
    inputs, targets = make_data()
    model = wrap_fsdp2(make_model(), mesh=mesh)
    opt = OPTIMIZERS["fast"](model.parameters(), **OPT_KW)
    placements = sorted({str(p.placements) for p in model.parameters()})
    history = train_steps(model, opt, shard_rows(inputs, rank, world), shard_rows(targets, rank, world), NUM_STEPS)
    opt.eval()
    return {"x": full_params(model), "history": history, "placements": placements}


def tp_fsdp2(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """2-D parallelism: tensor parallel inside pairs of ranks, FSDP2 across the pairs (the torchtitan layout)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
    model = parallelize_module(make_model(), mesh["tp"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
    model = wrap_fsdp2(model, mesh=mesh["dp"])
    opt = OPTIMIZERS["fast"](model.parameters(), **OPT_KW)
    placements = sorted({str(p.placements) for p in model.parameters()})
    inputs, targets = make_data()
    dp_rank = mesh["dp"].get_local_rank()
    history = train_steps(model, opt, shard_rows(inputs, dp_rank, 2), shard_rows(targets, dp_rank, 2), NUM_STEPS)
    opt.eval()
    return {"x": full_params(model), "history": history, "placements": placements}


# ---------------------------------------------------------------------------------------------- the lab's helpers
def lab_helpers(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """``sfplus_lab.distributed`` as torchrun would see it (the env variables torchrun sets)."""
    import os

    from sfplus_lab import distributed as LD

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT="1"
    )
    ctx = LD.init("cpu")  # the group exists already: init must join it, not start another
    wrapped = LD.wrap_model(make_model(), ctx)
    return {
        "ctx": (ctx.rank, ctx.world_size, ctx.is_main, ctx.device),
        "sums": LD.all_reduce_sums([rank + 1.0, 1.0], ctx),
        "any_rank": LD.any_rank(rank == 1, ctx),
        "none": LD.any_rank(False, ctx),
        "unwrapped_is_plain": type(LD.unwrap_model(wrapped)) is nn.Sequential
        and isinstance(wrapped, nn.parallel.DistributedDataParallel),
    }


# ---------------------------------------------------------------------------------------------- the lab's trainer
LAB_STEPS = 12
LAB_BATCH = 4  # sequences per rank and step


def lab_config(world: int, num_steps: int = LAB_STEPS) -> Any:
    """The tiny recipe, sized so that ``num_steps`` steps of ``world`` x LAB_BATCH sequences cover the budget."""
    from dataclasses import replace

    from sfplus_lab.optim_factory import OptimConfig
    from sfplus_lab.recipes import LAB_V1, tiny

    cfg = tiny()
    data = replace(cfg.data, batch_size=LAB_BATCH)
    tokens = num_steps * world * LAB_BATCH * data.seq_len
    train = replace(cfg.train, tokens=tokens, tokens_per_param=None, eval_every=6, eval_batches=1)
    # The trainer's DDP mechanics are under test, compared on float32 losses to a one-process run. DDP's
    # averaged gradient differs from one process's in rounding, which the library's default (gamma = 1) grows
    # to 5e-4 of the loss by step 10, past the 1e-4 this check allows; the 0.1.0 setting (gamma = 0.3) stays
    # within it. (The optimizer's own exactness under DDP is checked in float64 by test_distributed's
    # optimizer scenarios.)
    optim = OptimConfig(**{**LAB_V1, "warmup_steps": cfg.optim.warmup_steps})
    return replace(cfg, data=data, train=train, optim=optim, checkpoint=replace(cfg.checkpoint, every=6))


def _lab_trainer(rank: int, world: int, work_dir: str) -> Any:
    from pathlib import Path

    from sfplus_lab.data import load_corpus
    from sfplus_lab.distributed import DistContext
    from sfplus_lab.trainer import Trainer

    corpus = load_corpus(None, cache_dir=str(Path(work_dir) / f"cache{rank}"))
    ctx = DistContext(rank=rank, world_size=world, local_rank=rank, device="cpu")
    (Path(work_dir) / "run").mkdir(exist_ok=True)
    return Trainer(lab_config(world), corpus, Path(work_dir) / "run", dist_ctx=ctx)


def lab_train(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """The lab's Trainer on 2 ranks: final parameters, the rows rank 0 logged, and the files written."""
    import os

    trainer = _lab_trainer(rank, world, work_dir)
    result = trainer.run()
    dist.barrier()  # rank 0 has written everything
    files = sorted(os.listdir(os.path.join(work_dir, "run"))) if rank == 0 else None
    return {
        "step": result.step,
        "params": {name: p.detach().clone() for name, p in trainer.model.named_parameters()},
        "rows": trainer.metrics.rows,
        "files": files,
        "checkpoints": sorted(os.listdir(os.path.join(work_dir, "run", "checkpoints"))) if rank == 0 else None,
    }


def lab_stop_agreement(rank: int, world: int, work_dir: str) -> dict[str, Any]:
    """Only rank 1 gets the stop request (as if SIGTERM reached it first), during step 5: both ranks stop there."""
    import os

    trainer = _lab_trainer(rank, world, work_dir)
    original = trainer.train_step

    def train_step() -> dict[str, Any]:
        if rank == 1 and trainer.step == 4:
            trainer.stop_requested = True
        return original()

    trainer.train_step = train_step
    result = trainer.run()
    dist.barrier()
    checkpoints = sorted(os.listdir(os.path.join(work_dir, "run", "checkpoints"))) if rank == 0 else None
    return {"step": result.step, "stopped_early": result.stopped_early, "checkpoints": checkpoints}


# ---------------------------------------------------------------------------------------------- refused setups
def refused_setups(rank: int, world: int, work_dir: str) -> dict[str, str]:
    """Setups that would give wrong statistics raise before any collective (so no rank hangs).

    - FSDP2 shards over both ranks but the optimizer is given a one-rank ``process_group``;
    - a gradient laid out unlike its parameter (replicated gradient for a sharded parameter).
    """
    from torch.distributed.tensor import Replicate, distribute_tensor

    inputs, targets = make_data()
    inputs, targets = shard_rows(inputs, rank, world), shard_rows(targets, rank, world)
    singles = [dist.new_group([r]) for r in range(world)]  # every rank creates every group
    messages = {}
    for case in ("small_group", "grad_layout"):
        model = wrap_fsdp2(make_model())
        group = singles[rank] if case == "small_group" else None
        opt = OPTIMIZERS["fast"](model.parameters(), process_group=group, **OPT_KW)
        nn.functional.mse_loss(model(inputs), targets).backward()
        if case == "grad_layout":
            p = next(iter(model.parameters()))
            p.grad = distribute_tensor(p.grad.full_tensor(), p.device_mesh, [Replicate()])
        before = full_params(model)
        try:
            opt.step(loss=1.0)
            messages[case] = "no error"
        except RuntimeError as exc:
            messages[case] = str(exc)
        after = full_params(model)
        messages[case + "_unchanged"] = all(torch.equal(before[k], after[k]) for k in before)
    return messages
