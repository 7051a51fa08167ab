"""The small problem every distributed test trains: a float64 MLP fitting a teacher MLP (true minimum 0).

The one-process reference and the ranks build it from the same seeds, so rank r's slice of the
global batch plus the others' is exactly the batch the reference sees.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import sfplus

#: Every piece of the step is switched on: warmup, β annealing, the L1 EMA, warm start, AdamC decay.
OPT_KW: dict[str, Any] = dict(
    **sfplus.PAPER,  # the paper's exact update: these tests hold it to one process
    warmup_steps=3,
    sf_beta1_anneal_steps=10,
    polyak_beta=0.9,
    c_warmup=4,
    weight_decay=5.0,
    r=1.0,
)
NUM_STEPS = 15
GLOBAL_BATCH = 16
SIZES = (6, 16, 3)
def robust_fast(params: Any, **kwargs: Any) -> sfplus.ScheduleFreePlus:
    """The fast class at the library's default preset: its safeguards keep global state (P_ref, P_first)
    that every rank must compute alike."""
    return sfplus.ScheduleFreePlus(params, **{**kwargs, "preset": "robust"})


OPTIMIZERS = {"fast": sfplus.ScheduleFreePlus, "reference": sfplus.ScheduleFreePlusReference, "robust": robust_fast}


def make_model(seed: int = 0) -> nn.Module:
    """A 6-16-3 tanh MLP in float64 with weights from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.Tanh(), nn.Linear(SIZES[1], SIZES[2])).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    return model


def make_data(seed: int = 1, batch: int = GLOBAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and the outputs of a different (teacher) MLP: a realizable problem, minimum loss 0."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, SIZES[0], generator=gen, dtype=torch.float64)
    teacher = make_model(seed + 100)
    with torch.no_grad():
        targets = teacher(inputs)
    return inputs, targets


def shard_rows(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s equal slice of the global batch."""
    n = t.shape[0] // world
    return t[rank * n : (rank + 1) * n]


def train_steps(
    model: nn.Module, opt: sfplus.ScheduleFreePlus, inputs: torch.Tensor, targets: torch.Tensor, num_steps: int
) -> list[dict[str, float]]:
    """``num_steps`` steps, each passing this process's own (local) loss; returns each step's scalars."""
    history = []
    for _ in range(num_steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        opt.step(loss=loss)
        history.append({key: opt.stats[key] for key in ("k", "alpha", "loss", "inner", "l1", "c", "beta")})
    return history


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a full tensor (gathering DTensor shards), by name, detached copies."""
    out = {}
    for name, p in model.named_parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name.replace("module.", "")] = t.detach().clone()
    return out


def reference_run(
    name: str, batch: tuple[torch.Tensor, torch.Tensor] | None = None, num_steps: int = NUM_STEPS
) -> dict[str, Any]:
    """One process, the whole batch: the result every distributed run must reproduce."""
    inputs, targets = batch if batch is not None else make_data()
    model = make_model()
    opt = OPTIMIZERS[name](model.parameters(), **OPT_KW)
    history = train_steps(model, opt, inputs, targets, num_steps)
    y = full_params(model)
    opt.eval()
    return {"x": full_params(model), "y": y, "history": history}
