"""Named runs: functions that return a complete :class:`~sfplus_lab.config.RunConfig`.

The command line selects one with ``--recipe`` (``default`` when omitted) and overrides a few fields with
flags, so every run is "a recipe plus the flags you typed", both saved in config.json.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import CheckpointConfig, DataConfig, RunConfig, TrainConfig
from .errors import UserError
from .optim_factory import OptimConfig

__all__ = ["RECIPES", "get_recipe", "default", "tiny", "bench"]


#: The lab's ScheduleFree+ configuration of version 0.1.0: the paper's exact update (no safeguards) with the
#: paper's LLM settings and gamma = 0.3 (``--preset paper --lr 0.3 ...``), kept for comparisons.
LAB_V1 = dict(preset="paper", lr=0.3, warmup_steps=50, weight_decay=10.0, sf_beta1_anneal_steps=1000, polyak_beta=0.9,
              c_warmup=100)  # fmt: skip


def default() -> RunConfig:
    """The README's main job: a 1M-parameter GPT on the built-in public-domain text, a few minutes on 2 CPU cores.

    ScheduleFree+ runs with the library's defaults (``ScheduleFreePlus(params)``).
    """
    return RunConfig(
        data=DataConfig(batch_size=16, seq_len=128),
        optim=OptimConfig(),
        train=TrainConfig(model_size="1m", tokens=1_200_000, eval_every=50, evals_per_decade=20),
        checkpoint=CheckpointConfig(every=100, keep=2),
    )


def tiny() -> RunConfig:
    """A seconds-long CPU smoke run (tests and CI): a 50k-parameter model on short sequences."""
    return RunConfig(
        data=DataConfig(batch_size=8, seq_len=64),
        optim=OptimConfig(warmup_steps=5, c_warmup=10),  # a warm start, so that checkpoints fall on both sides
        train=TrainConfig(model_size="50k", tokens=20_480, eval_every=10, eval_batches=2, progress=False),
        checkpoint=CheckpointConfig(every=10, keep=2),
    )


def bench(model_size: str = "1m", optimizer: str = "sfplus", tokens_per_param: float = 1.0, seed: int = 0) -> RunConfig:
    """A comparison run for the benchmarks: one size, one optimizer, a budget in tokens per parameter."""
    return RunConfig(
        data=DataConfig(batch_size=16, seq_len=128),
        optim=OptimConfig(name=optimizer),
        train=TrainConfig(model_size=model_size, tokens_per_param=tokens_per_param, seed=seed, progress=False),
        checkpoint=CheckpointConfig(every=0, keep=2),
    )


RECIPES: dict[str, Callable[[], RunConfig]] = {"default": default, "tiny": tiny, "bench": bench}


def get_recipe(name: str) -> RunConfig:
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]()
