"""The quality benchmark's configuration: one typed dataclass, saved into every results file.

The ScheduleFree+ configuration is NOT a field here: the benchmark always uses the lab's documented
default ``OptimConfig(name="sfplus")`` unchanged, for every size and budget (fixed in advance, no per-run
tuning). The baselines get learning-rate sweeps on a factor-2 grid ``lr_base * 2**k``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError
from ..model import PRESETS, ModelConfig, model_preset
from ..optim_factory import METHODS, is_tuned

__all__ = ["BASELINES", "BENCH_SIZES", "SFPLUS_CONFIGS", "BenchConfig", "baselines", "fixed_configs", "quick_config",
           "model_config"]


def baselines() -> tuple[str, ...]:
    """The registry's baselines (``Method.tuned``): each gets an LR sweep. ScheduleFree+ always runs too."""
    return tuple(name for name, m in METHODS.items() if m.tuned)


def fixed_configs() -> tuple[str, ...]:
    """The registry's further fixed ScheduleFree+ configurations (``--sfplus-extra``), all but "sfplus"."""
    return tuple(name for name, m in METHODS.items() if m.polyak and not m.tuned and name != "sfplus")


#: The baselines when this module was imported (``baselines()``), kept for scripts that import the name.
BASELINES = baselines()

#: ScheduleFree+ configurations, each fixed in advance: ``OptimConfig(name="sfplus")`` overrides, from the
#: registry (``sfplus_lab.optim_factory.METHODS`` says what each is). "sfplus", the headline, is the
#: library's default, untouched.
SFPLUS_CONFIGS: dict[str, dict[str, Any]] = {
    name: dict(m.config) for name, m in METHODS.items() if m.polyak and not m.tuned
}

#: size -> (n_layer, n_head, d_model): the lab's one size list (``sfplus_lab.model.PRESETS``, whose
#: smallest four, 3k to 20k, are the benchmark's), so ``sfplus train --model`` takes every bench size.
BENCH_SIZES: dict[str, tuple[int, int, int]] = PRESETS


def model_config(size: str, vocab_size: int, seq_len: int) -> ModelConfig:
    """The model of a named benchmark size: ``sfplus_lab.model.model_preset``, the one size registry."""
    return model_preset(size, vocab_size, seq_len)


@dataclass(kw_only=True, slots=True)
class BenchConfig:
    """What ``sfplus bench`` runs. Budgets are in tokens per parameter; learning rates on a factor-2 grid."""

    sizes: tuple[str, ...] = ("6k",)
    """Model sizes (``BENCH_SIZES``); each gets the full sweep."""
    budgets: tuple[float, ...] = (20.0, 100.0, 1000.0)
    """Token budgets in tokens per parameter. The largest is the 'long' budget (phase 2)."""
    baselines: tuple[str, ...] = field(default_factory=baselines)
    """Baselines to sweep (ScheduleFree+ always runs)."""
    sfplus_extra: tuple[str, ...] = ("sfplus-gamma1",)
    """Further fixed ScheduleFree+ configurations (``SFPLUS_CONFIGS``), for comparison."""
    extra_seeds: int = 1
    """Seeds for each further configuration (``sfplus_extra``); the headline ``sfplus`` gets ``seeds``."""
    lr_base: float = 1e-3
    """Learning-rate grid: ``lr_base * 2**k``."""
    lr_grid: tuple[int, ...] = (2, 3, 4, 5)
    """Grid exponents k swept first at the short budgets (4e-3 ... 3.2e-2 by default; extended when needed)."""
    max_extensions: int = 2
    """How many grid points a sweep may add on one side when its best LR lies on the edge."""
    long_max_extensions: int = 2
    """Grid points the long-budget sweep may add beyond its two starting points (each costs a full run)."""
    long_sweep: str = "two-sided"
    """At the long budget, start from the short-budget best k and k-1, then extend until the best is
    bracketed: 'two-sided' (both neighbours measured) or 'one-sided' (only downwards)."""
    batch_size: int = 32
    """Sequences per step."""
    seq_len: int = 64
    """Tokens per sequence."""
    seeds: int = 2
    """Seeds for ScheduleFree+ and for each baseline's best LR at the short budgets (seed 0 sweeps)."""
    long_seed_baselines: tuple[str, ...] = ("adamw-wsd",)
    """Baselines whose best LR at the long budget also gets the extra seeds (the headline cell: WSD)."""
    sfplus_horizon: float = 1.25
    """ScheduleFree+ runs to this multiple of the long budget, so time-to-target can exceed 1."""
    evals_per_decade: int = 12
    """ScheduleFree+'s evaluation points per decade of tokens (log-spaced; its time-to-target needs them)."""
    baseline_evals_per_decade: int = 4
    """The baselines' evaluation points per decade (their budget ends and WSD branch points are added)."""
    eval_tokens: int = 16384
    """Validation tokens per source per evaluation (the same windows for every run)."""
    first_eval_tpp: float = 0.5
    """First evaluation, in tokens per parameter."""
    workers: int = 2
    """Processes running at once (1 = in this process)."""
    threads: int = 1
    """torch threads per process."""
    device: str = "cpu"
    """``cpu`` or ``cuda``."""
    data: tuple[str, ...] | None = None
    """Corpus for ``load_corpus`` (None = the built-in text; ("debian",) = the fetched corpus)."""
    tokenizer: str = "byte"
    """``byte`` or ``bpe``."""
    quick: bool = False
    """Set by ``--quick``: a smoke-sized run with the same results schema."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sizes = tuple(self.sizes)
        self.budgets = tuple(float(b) for b in self.budgets)
        self.baselines = tuple(self.baselines)
        self.lr_grid = tuple(self.lr_grid)
        self.long_seed_baselines = tuple(self.long_seed_baselines)
        self.sfplus_extra = tuple(self.sfplus_extra)
        fixed = fixed_configs()
        unknown = [m for m in self.sfplus_extra if m not in fixed]
        if unknown:
            raise UserError(f"unknown extra ScheduleFree+ configuration(s) {unknown}; choose from {', '.join(fixed)}")
        if self.data is not None:
            self.data = tuple(self.data)
        for size in self.sizes:
            if size not in BENCH_SIZES:
                raise UserError(f"unknown size {size!r}; choose from {', '.join(BENCH_SIZES)}")
        if not self.sizes:
            raise UserError("no model size given")
        if len(self.budgets) < 1 or any(not (math.isfinite(b) and b > 0) for b in self.budgets):
            raise UserError(f"budgets must be positive tokens-per-parameter values, got {self.budgets}")
        if list(self.budgets) != sorted(set(self.budgets)):
            raise UserError(f"budgets must be increasing and distinct, got {self.budgets}")
        unknown = [b for b in (*self.baselines, *self.long_seed_baselines) if not is_tuned(b)]
        if unknown:
            raise UserError(f"unknown baseline(s) {unknown}; choose from {', '.join(baselines())}")
        if not self.lr_grid or not (self.lr_base > 0):
            raise UserError("lr_grid must be non-empty and lr_base > 0")
        if self.long_sweep not in ("two-sided", "one-sided"):
            raise UserError(f"long_sweep must be 'two-sided' or 'one-sided', got {self.long_sweep!r}")
        for name in ("batch_size", "seq_len", "seeds", "extra_seeds", "evals_per_decade", "baseline_evals_per_decade",
                     "eval_tokens", "workers", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if self.max_extensions < 0 or self.long_max_extensions < 0:
            raise UserError(f"max_extensions and long_max_extensions must be >= 0, got {self.max_extensions}, "
                            f"{self.long_max_extensions}")
        if self.sfplus_horizon < 1.0:
            raise UserError(f"sfplus_horizon must be >= 1 (a multiple of the longest budget), got "
                            f"{self.sfplus_horizon}")
        if self.tokenizer not in ("byte", "bpe"):
            raise UserError(f"tokenizer must be 'byte' or 'bpe', got {self.tokenizer!r}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def short_budgets(self) -> tuple[float, ...]:
        """Budgets swept in phase 1 (all but the longest); the longest alone if there is only one."""
        return self.budgets[:-1] or self.budgets

    @property
    def long_budget(self) -> float:
        return self.budgets[-1]

    def lr(self, k: int) -> float:
        return self.lr_base * 2.0**k

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        return d


def quick_config(**overrides: Any) -> BenchConfig:
    """A few-minute smoke benchmark (CI): a 3k-parameter model, budgets 2/5/10 tokens per parameter,
    two learning rates, no grid extension, one process. Same code path and results schema as the real run."""
    values: dict[str, Any] = dict(
        sizes=("3k",),
        budgets=(2.0, 5.0, 10.0),
        lr_grid=(3, 4),
        max_extensions=0,
        long_max_extensions=0,
        batch_size=8,
        seq_len=32,
        seeds=2,
        evals_per_decade=6,
        baseline_evals_per_decade=3,
        eval_tokens=2048,
        first_eval_tpp=0.5,
        workers=1,
        quick=True,
    )
    values.update(overrides)
    return BenchConfig(**values)
