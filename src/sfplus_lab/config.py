"""Typed run configuration: one dataclass per component, validated on construction, saved as JSON with every run.

A run is ``RunConfig(data=..., optim=..., train=..., checkpoint=...)``; the model's architecture is resolved
from ``train.model_size`` once the corpus (and so the vocabulary) is known, and stored in ``RunConfig.model``.
Named runs are functions in :mod:`sfplus_lab.recipes`; the command line picks one and overrides a few fields.
Every bad value raises :class:`~sfplus_lab.errors.UserError` naming the field, so the CLI prints one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import UserError
from .model import PRESETS, ModelConfig, model_preset
from .optim_factory import OptimConfig

__all__ = ["CheckpointConfig", "DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig"]

TOKENIZERS = ("byte", "bpe")
DEVICES = ("auto", "cpu", "cuda")


def _positive_int(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a non-negative" if allow_zero else "a positive"
        raise UserError(f"{owner}{name} must be {kind} integer, got {value!r}")


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """What text to train on and how it is cut into batches."""

    paths: list[str] | None = None
    """Text files or folders (each one validation source); None = the public-domain text shipped in the
    package; ["debian"] = the corpus built by ``sfplus data fetch``."""
    tokenizer: str = "byte"
    """"byte" (256 ids, no training) or "bpe" (trained locally with the ``tokenizers`` package)."""
    vocab_size: int | None = None
    """BPE vocabulary size (None = the data layer's default); ignored for bytes."""
    cache_dir: str | None = None
    """Where token arrays are cached (None = $SFPLUS_CACHE or ~/.cache/sfplus)."""
    batch_size: int = 16
    """Sequences per optimizer step (per rank in data-parallel runs)."""
    seq_len: int = 128
    """Tokens per sequence (the model's context length)."""

    def __post_init__(self) -> None:
        if self.paths is not None:
            if isinstance(self.paths, str) or not all(isinstance(p, str) and p for p in self.paths):
                raise UserError(f"data paths must be a list of non-empty strings, got {self.paths!r}")
            if not self.paths:
                raise UserError("data paths is an empty list; leave it unset for the built-in text")
            self.paths = list(self.paths)
        if self.tokenizer not in TOKENIZERS:
            raise UserError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        if self.vocab_size is not None:
            _positive_int("data ", "vocab_size", self.vocab_size)
        _positive_int("", "batch_size", self.batch_size)
        _positive_int("", "seq_len", self.seq_len)


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """The training loop: budget, model size, seed, evaluation cadence, hardware."""

    model_size: str = "1m"
    """The model's size, a key of ``sfplus_lab.model.PRESETS`` (the bench's sizes too)."""
    tokens: int | None = None
    """Training budget in tokens; exactly one of ``tokens`` and ``tokens_per_param`` is set."""
    tokens_per_param: float | None = None
    """Training budget as tokens per model parameter (e.g. 20 for a Chinchilla-style budget)."""
    seed: int = 0
    """Seeds the model's initialisation and the batch sequence (batches are a pure function of seed and step)."""
    eval_every: int = 50
    """Evaluate the validation loss at x every this many steps (and at step 0 and at the end)."""
    evals_per_decade: int = 0
    """Also evaluate at this many log-spaced steps per decade between ``eval_every`` and the end (0 = none):
    ``sfplus predict`` fits the early part of a run, which a fixed interval samples too sparsely."""
    eval_batches: int = 8
    """At most this many batches of validation windows per source, spread over the whole split."""
    log_every: int = 1
    """Write a train row to metrics.jsonl every this many steps."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda". CUDA runs use bf16 autocast; CPU runs stay fp32."""
    compile: bool = False
    """torch.compile the model (worth it on a GPU)."""
    max_consecutive_skips: int = 10
    """Abort after this many consecutive non-finite steps (each one is skipped, not applied)."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def __post_init__(self) -> None:
        if str(self.model_size).lower() not in PRESETS:
            raise UserError(f"unknown model size {self.model_size!r}; choose one of {', '.join(PRESETS)}")
        self.model_size = str(self.model_size).lower()
        if self.tokens is not None and self.tokens_per_param is not None:
            raise UserError("give either tokens or tokens_per_param, not both")
        if self.tokens is None and self.tokens_per_param is None:
            raise UserError("give a training budget: tokens or tokens_per_param")
        if self.tokens is not None:
            _positive_int("", "tokens", self.tokens)
        if self.tokens_per_param is not None:
            tpp = self.tokens_per_param
            if isinstance(tpp, bool) or not isinstance(tpp, (int, float)) or not (math.isfinite(tpp) and tpp > 0):
                raise UserError(f"tokens_per_param must be a positive number, got {tpp!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise UserError(f"seed must be an integer in [0, 2^63), got {self.seed!r}")
        _positive_int("", "eval_every", self.eval_every)
        _positive_int("", "evals_per_decade", self.evals_per_decade, allow_zero=True)
        _positive_int("", "eval_batches", self.eval_batches)
        _positive_int("", "log_every", self.log_every)
        _positive_int("", "max_consecutive_skips", self.max_consecutive_skips)
        if self.device not in DEVICES:
            raise UserError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")


@dataclass(kw_only=True, slots=True)
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every: int = 200
    """Save every this many steps (0 = only at the end and on SIGTERM)."""
    keep: int = 2
    """Keep the newest ``keep`` complete checkpoints (at least 2, so one bad save never leaves none)."""

    def __post_init__(self) -> None:
        _positive_int("checkpoint ", "every", self.every, allow_zero=True)
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 2:
            raise UserError(f"checkpoint keep must be an integer >= 2, got {self.keep!r}")


@dataclass(kw_only=True, slots=True)
class RunConfig:
    """Everything that defines a run; ``to_dict`` is what config.json holds."""

    data: DataConfig = field(default_factory=DataConfig)
    """The text and batch shape."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The optimizer and its schedule."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(tokens=500_000))
    """The loop."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence and retention."""
    model: ModelConfig | None = None
    """The resolved architecture (filled in by :meth:`resolve_model` once the vocabulary is known)."""

    def resolve_model(self, vocab_size: int) -> RunConfig:
        """A copy whose ``model`` is the preset for this vocabulary and sequence length (unless already set)."""
        if self.model is not None:
            if self.model.vocab_size != vocab_size:
                raise UserError(
                    f"the model's vocab_size {self.model.vocab_size} does not match the data's {vocab_size}"
                )
            return self
        return replace(self, model=model_preset(self.train.model_size, vocab_size, self.data.seq_len))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["optim"] = self.optim.resolved().to_dict()
        out["optim"]["betas"] = list(out["optim"]["betas"])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Rebuild (and re-validate) a config read from config.json; unknown keys are an error."""
        try:
            return cls(
                data=_build(DataConfig, d.get("data", {})),
                optim=_build(OptimConfig, d.get("optim", {})),
                train=_build(TrainConfig, d.get("train", {})),
                checkpoint=_build(CheckpointConfig, d.get("checkpoint", {})),
                model=_build(ModelConfig, d["model"]) if d.get("model") else None,
            )
        except TypeError as exc:
            raise UserError(f"run config is not readable: {exc}") from exc


def _build(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s) in the run config: {', '.join(unknown)}")
    return cls(**values)
