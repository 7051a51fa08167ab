"""Build ScheduleFree+ or a baseline (AdamW with WSD / cosine / linear decay, Schedule-Free AdamW) from one config.

The baselines come from their own libraries (torch.optim, transformers' WSD schedule, ``schedulefree``)
so a comparison measures ScheduleFree+ against the code people actually use, not a re-implementation.

ScheduleFree+ takes every hyperparameter the config leaves as None from the library's own defaults
(``sfplus.PRESETS[preset]``; ``preset="robust"`` unless set), so the lab trains exactly what
``sfplus.ScheduleFreePlus(params)`` gives a user. The one thing the lab adds is the usual parameter
grouping: AdamC decay on matrices and embeddings, none on norm gains and biases (``param_groups``).
docs/algorithm.md ("Defaults") says why the defaults are what they are.

``METHODS``, at the end of this module, is the one registry of methods that ``sfplus train``, ``sfplus bench``
(its plan, runner, analysis and figures) read: a new baseline or ScheduleFree+ variant is one entry there
(docs/architecture.md). ``step(opt, loss)`` is the one place that knows ScheduleFree+ takes the loss.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .errors import UserError

__all__ = [
    "METHODS",
    "Method",
    "OPTIMIZERS",
    "is_tuned",
    "OptimConfig",
    "build_optimizer",
    "param_groups",
    "needs_loss",
    "step",
    "optimizer_scalars",
    "set_train_mode",
    "at_x",
    "OFF",
    "add_variant",
]

#: The value that turns a safeguard off (max_inner, max_step_growth, max_step_ratio). None cannot: in an
#: OptimConfig it means "the library's default", which has every safeguard on; the library's own None (off)
#: is what ``_build_sfplus`` passes for it.
OFF = "off"
_SAFEGUARDS = ("max_inner", "max_step_growth", "max_step_ratio")
#: sfplus fields whose None means "the preset's value".
PRESET_FIELDS = ("lr", "betas", "warmup_steps", "weight_decay", "sf_beta1_anneal_steps", "polyak_beta", "c_warmup",
                 *_SAFEGUARDS, "bounded_decay")  # fmt: skip


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    """Which optimizer and its hyperparameters. A field left None takes the named optimizer's default: for
    sfplus the library's preset (``sfplus.PRESETS[preset]``), for a baseline its ``METHODS`` entry's."""

    name: str = "sfplus"
    """A base entry of ``METHODS`` (one of ``OPTIMIZERS``)."""
    preset: str = "robust"
    """sfplus: the library's defaults ("robust") or the paper's exact update ("paper") for fields left None."""
    lr: float | None = None
    """sfplus: the multiplier gamma of the Polyak step. Baselines: the peak learning rate."""
    warmup_steps: int | None = None
    """Linear warmup, in optimizer steps (a fixed count, never a fraction of the run); None: the library's
    default for sfplus, 50 steps for the baselines."""
    weight_decay: float | None = None
    """sfplus: AdamC lambda (scaled by alpha^2). Baselines: decoupled AdamW decay."""
    betas: tuple[float, float] | None = None
    """Adam's (beta1, beta2); for sfplus beta1 is the inner momentum. None: the library's for sfplus, (0.9, 0.95) for
    the baselines."""
    eps: float = 1e-8
    """Adam's epsilon."""
    sf_beta1: float = 0.9
    """sfplus / sf-adamw: interpolation weight of y between x and z (sf-adamw uses it as its beta1)."""
    sf_beta1_max: float = 0.965
    """sfplus: the value sf_beta1 is annealed to (in log(1 - beta))."""
    sf_beta1_anneal_steps: int | None = None
    """sfplus: steps over which sf_beta1 anneals to sf_beta1_max; 0 turns annealing off."""
    polyak_beta: float | None = None
    """sfplus: EMA of the gradient's L1 norm in the Polyak denominator."""
    c_warmup: int | None = None
    """sfplus: steps during which the average x follows z (the paper advises 1-2x warmup_steps); None: the
    library's (0 in the robust preset)."""
    max_inner: float | str | None = None
    """sfplus: safeguard, I <= max_inner * (F - f*); ``OFF`` ("off") turns it off (docs/algorithm.md)."""
    max_step_growth: float | str | None = None
    """sfplus: safeguard, the Polyak factor grows at most this fraction per step; ``OFF`` ("off") turns it off."""
    max_step_ratio: float | str | None = None
    """sfplus: safeguard, the Polyak factor never exceeds this times its first value; ``OFF`` ("off") turns it
    off."""
    bounded_decay: bool | None = None
    """sfplus: safeguard, AdamC decay in its implicit form alpha^2 lambda / (1 + alpha^2 lambda)."""
    r: float = 1.0
    """sfplus / sf-adamw: polynomial averaging power."""
    weight_lr_power: float = 2.0
    """sfplus / sf-adamw: power of the step size in the averaging weights."""
    max_step: float | None = None
    """sfplus: optional cap on the Polyak step alpha (None = uncapped)."""
    loss_floor: float = 0.0
    """sfplus: a known lower bound f* of the loss; the Polyak step uses F - f*. 0 for cross-entropy."""
    cooldown_frac: float = 0.2
    """adamw-wsd: fraction of the run spent in the final linear decay."""
    min_lr_ratio: float = 0.0
    """Decaying schedules end at lr * min_lr_ratio."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value before the step (0 = off). Not allowed with sfplus: clipping
    shrinks ||g||_1 but not the loss, which inflates the Polyak step (README, "Change one line", rule 3)."""

    def __post_init__(self) -> None:
        if self.name not in METHODS or METHODS[self.name].build is None:
            bases = [name for name, m in METHODS.items() if m.build is not None]
            raise UserError(f"unknown optimizer {self.name!r}; choose one of {', '.join(bases)}")
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps)
        if self.preset not in ("robust", "paper"):
            raise UserError(f"unknown sfplus preset {self.preset!r}; choose robust or paper")
        if self.sf_beta1_anneal_steps is not None:
            _check_int("sf_beta1_anneal_steps", self.sf_beta1_anneal_steps)
        if self.c_warmup is not None:
            _check_int("c_warmup", self.c_warmup)
        if self.lr is not None:
            _check_number("lr", self.lr, low=0.0, low_open=True)
        if self.weight_decay is not None:
            _check_number("weight_decay", self.weight_decay, low=0.0)
        if self.betas is not None:
            if len(self.betas) != 2:
                raise UserError(f"betas must be two numbers, got {self.betas!r}")
            for i, beta in enumerate(self.betas):
                _check_number(f"betas[{i}]", beta, low=0.0, high=1.0)
        _check_number("eps", self.eps, low=0.0, low_open=True)
        _check_number("sf_beta1", self.sf_beta1, low=0.0, high=1.0, low_open=True)
        _check_number("sf_beta1_max", self.sf_beta1_max, low=self.sf_beta1, high=1.0)
        if self.polyak_beta is not None:
            _check_number("polyak_beta", self.polyak_beta, low=0.0, high=1.0)
        for name in _SAFEGUARDS:
            if getattr(self, name) not in (None, OFF):
                _check_number(name, getattr(self, name), low=0.0)
        if self.bounded_decay is not None and not isinstance(self.bounded_decay, bool):
            raise UserError(f"bounded_decay must be true or false, got {self.bounded_decay!r}")
        _check_number("r", self.r, low=0.0)
        _check_number("weight_lr_power", self.weight_lr_power, low=0.0)
        if self.max_step is not None:
            _check_number("max_step", self.max_step, low=0.0, low_open=True)
        _check_number("loss_floor", self.loss_floor, low=-math.inf)
        _check_number("cooldown_frac", self.cooldown_frac, low=0.0, high=1.0, high_closed=True)
        _check_number("min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0, high_closed=True)
        _check_number("grad_clip", self.grad_clip, low=0.0)
        if METHODS[self.name].polyak and self.grad_clip > 0:
            raise UserError(
                "grad_clip is not supported with sfplus: clipping shrinks the gradient's L1 norm but not the "
                "loss, which inflates the Polyak step; leave it at 0"
            )

    def resolved(self) -> OptimConfig:
        """A copy with every None replaced by the value actually used (what config.json records).

        For sfplus the values come from the library (``sfplus.PRESETS[preset]``), so that a changed library
        default changes the lab with it; a baseline takes its ``METHODS`` entry's ``lr`` and ``weight_decay``.
        """
        if self.name != "sfplus":
            method = METHODS[self.name]
            return replace(
                self,
                lr=method.lr if self.lr is None else self.lr,
                warmup_steps=method.warmup_steps if self.warmup_steps is None else self.warmup_steps,
                betas=method.betas if self.betas is None else self.betas,
                weight_decay=method.weight_decay if self.weight_decay is None else self.weight_decay,
            )
        from sfplus import PRESETS

        table = PRESETS[self.preset]
        values = {f: table[f] if getattr(self, f) is None else getattr(self, f) for f in PRESET_FIELDS}
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{name} must be a non-negative integer, got {value!r}")


def _check_number(
    name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False, high_closed: bool = False
) -> None:
    """Finite number in [low, high) (or (low, ...) / (..., high]); NaN fails every comparison, so it is rejected."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value <= high if high_closed else value < high)
    if not ok:
        lo, hi = "(" if low_open else "[", "]" if high_closed else ")"
        raise UserError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: matrices (embedding included) decay, 1-D tensors (norm gains, biases) don't.

    Every trainable parameter lands in exactly one group (checked), in ``named_parameters`` order, so
    optimizer state dicts line up between runs of the same model.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    trainable = [p for p in model.parameters() if p.requires_grad]
    grouped = decay + no_decay
    if len(grouped) != len(trainable) or {id(p) for p in grouped} != {id(p) for p in trainable}:
        raise RuntimeError("parameter grouping lost or duplicated a parameter")  # a bug, not a user mistake
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    cfg: OptimConfig, model: nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimizer named by ``cfg`` over ``model``'s parameters, and its LR schedule (None when it needs none).

    ``total_steps`` is used only by the decaying baselines (their schedules need the horizon); ScheduleFree+
    and Schedule-Free AdamW ignore it. Every optimizer starts in train mode.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise UserError(f"total_steps must be a positive integer, got {total_steps!r}")
    cfg = cfg.resolved()
    return METHODS[cfg.name].build(cfg, param_groups(model, cfg.weight_decay), total_steps)


def _build_sfplus(cfg: OptimConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    from sfplus import ScheduleFreePlus

    opt = ScheduleFreePlus(
        groups,
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        sf_beta1=cfg.sf_beta1,
        sf_beta1_max=cfg.sf_beta1_max,
        sf_beta1_anneal_steps=cfg.sf_beta1_anneal_steps,
        polyak_beta=cfg.polyak_beta,
        loss_floor=cfg.loss_floor,
        c_warmup=cfg.c_warmup,
        r=cfg.r,
        weight_lr_power=cfg.weight_lr_power,
        max_step=cfg.max_step,
        **{name: None if getattr(cfg, name) == OFF else getattr(cfg, name) for name in _SAFEGUARDS},
        bounded_decay=cfg.bounded_decay,
        preset=cfg.preset,
    )
    opt.train()
    return opt


def _build_sf_adamw(cfg: OptimConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    try:
        import schedulefree
    except ImportError as exc:
        raise UserError(
            "optimizer sf-adamw needs the 'schedulefree' package: pip install schedulefree (or sfplus[bench])"
        ) from exc
    opt = schedulefree.AdamWScheduleFree(
        groups,
        lr=cfg.lr,
        betas=(cfg.sf_beta1, cfg.betas[1]),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        r=cfg.r,
        weight_lr_power=cfg.weight_lr_power,
    )
    opt.train()
    return opt


def _wsd_schedule(cfg: OptimConfig, opt: torch.optim.Optimizer, total_steps: int):
    """Warmup, a constant stage, then a linear cooldown over ``cooldown_frac`` of the run (transformers)."""
    try:
        from transformers import get_wsd_schedule
    except ImportError as exc:
        raise UserError(
            "optimizer adamw-wsd needs the 'transformers' package (its get_wsd_schedule): "
            "pip install transformers (or sfplus[bench])"
        ) from exc
    warmup = min(cfg.warmup_steps, total_steps)
    decay = min(round(cfg.cooldown_frac * total_steps), total_steps - warmup)
    return get_wsd_schedule(
        opt,
        num_warmup_steps=warmup,
        num_decay_steps=decay,
        num_training_steps=total_steps,
        decay_type="linear",
        min_lr_ratio=cfg.min_lr_ratio,
    )


def _cosine_schedule(cfg: OptimConfig, opt: torch.optim.Optimizer, total_steps: int):
    """Linear warmup then cosine decay to ``lr * min_lr_ratio`` at ``total_steps`` (torch.optim)."""

    def decay(steps: int):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=cfg.lr * cfg.min_lr_ratio)

    return _warmup_then(decay, cfg, opt, total_steps)


def _linear_schedule(cfg: OptimConfig, opt: torch.optim.Optimizer, total_steps: int):
    """Linear warmup then linear decay to ``lr * min_lr_ratio`` at ``total_steps`` (torch.optim)."""

    def decay(steps: int):
        return torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=cfg.min_lr_ratio, total_iters=steps)

    return _warmup_then(decay, cfg, opt, total_steps)


def _warmup_then(make_decay: Callable[[int], Any], cfg: OptimConfig, opt: torch.optim.Optimizer, total_steps: int):
    """``make_decay(decay_steps)`` after a linear warmup of ``cfg.warmup_steps`` (at most total_steps - 1)."""
    sched = torch.optim.lr_scheduler
    warmup = min(cfg.warmup_steps, total_steps - 1)
    decay = make_decay(total_steps - warmup)  # built before the ramp, whose construction sets the first lr
    if warmup == 0:
        return decay
    ramp = sched.LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return sched.SequentialLR(opt, schedulers=[ramp, decay], milestones=[warmup])


def needs_loss(opt: torch.optim.Optimizer) -> bool:
    """True for ScheduleFree+: its step takes this step's loss (``opt.step(loss=loss)``)."""
    from sfplus import ScheduleFreePlus, ScheduleFreePlusReference

    return isinstance(opt, (ScheduleFreePlus, ScheduleFreePlusReference))


def step(opt: torch.optim.Optimizer, loss: torch.Tensor | float) -> None:
    """One optimizer step: ScheduleFree+ is given this step's loss F (its Polyak step needs it), any other
    optimizer steps as ``torch.optim`` does. A tensor loss is detached first."""
    if needs_loss(opt):
        opt.step(loss=loss.detach() if isinstance(loss, torch.Tensor) else loss)
    else:
        opt.step()


def set_train_mode(opt: torch.optim.Optimizer, training: bool) -> None:
    """Schedule-free optimizers swap y (train) and x (eval) in the parameters; others have nothing to swap."""
    method = getattr(opt, "train" if training else "eval", None)
    if callable(method):
        method()


@contextlib.contextmanager
def at_x(model: nn.Module, opt: torch.optim.Optimizer) -> Iterator[dict[str, torch.Tensor]]:
    """Parameters at x inside the block (eval mode); afterwards exactly the y of before, in train mode.

    The block yields each parameter's training-mode value y by name (a checkpoint stores it; read it inside
    the block). ScheduleFree+ gives y back bit for bit itself (its ``train()`` restores what ``eval()`` kept
    aside; the yielded tensors are its ``y_values()``, no copies). Another schedule-free optimizer
    (schedulefree's AdamW) rebuilds y from x and z, exact only up to rounding, which would make a run depend
    (chaotically, by about seed noise) on where it was evaluated or saved: its parameters are snapshot here
    and put back. For other optimizers x = y.
    """
    if needs_loss(opt):  # ScheduleFree+: the library's own exact round trip
        set_train_mode(opt, False)
        y_of = opt.y_values()
        model.eval()
        try:
            yield {name: y_of.get(p, p) for name, p in model.named_parameters()}
        finally:
            set_train_mode(opt, True)
            model.train()
        return
    y_params = {name: p.detach().clone() for name, p in model.named_parameters()}
    set_train_mode(opt, False)
    model.eval()
    try:
        yield y_params
    finally:
        set_train_mode(opt, True)
        model.train()
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(y_params[name])


def optimizer_scalars(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The scalars worth logging after a step: ScheduleFree+'s ``stats`` (alpha, beta, c, ...), else the lr."""
    if needs_loss(opt):
        stats = dict(opt.stats)
        for key in ("alphas", "cs", "betas"):
            stats.pop(key, None)  # per-group copies; group 0's values are already there
        return stats
    return {"lr": float(opt.param_groups[0]["lr"])}


# ---------------------------------------------------------------------------------------------- the registry
Builder = Callable[[OptimConfig, list[dict[str, Any]], int], tuple[torch.optim.Optimizer, Any]]


@dataclass(frozen=True, slots=True)
class Method:
    """One entry of ``METHODS``: a name that ``sfplus train --optimizer``, ``sfplus bench`` and its figures know.

    A *base* entry has a ``build`` (its optimizer and LR schedule from a resolved ``OptimConfig``); a *variant*
    names its ``base`` and fixes some ``OptimConfig`` fields in ``config`` (e.g. the paper's update as the
    bench runs it). docs/architecture.md shows how to add either.
    """

    name: str
    build: Builder | None = None
    """Base entries: ``build(cfg, param_groups, total_steps) -> (optimizer, scheduler or None)``."""
    base: str | None = None
    """Variants: the base entry whose ``build`` they use (``OptimConfig.name``)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """Variants: the ``OptimConfig`` fields they fix."""
    kind: str = "anytime"
    """How the bench gets a value per budget: ``anytime`` (one run serves every budget, evaluated at x),
    ``wsd`` (one stable run with a cooldown branch per budget) or ``decay`` (one run per budget)."""
    tuned: bool = False
    """True for a baseline: the bench sweeps its learning rate. False: a fixed configuration."""
    polyak: bool = False
    """ScheduleFree+: takes the loss, reports the step alpha, must not clip gradients."""
    lr: float | None = None
    """Baselines: the learning rate when ``OptimConfig.lr`` is None (ScheduleFree+ takes the library's)."""
    weight_decay: float | None = None
    """Baselines: decoupled AdamW decay when ``OptimConfig.weight_decay`` is None."""
    warmup_steps: int = 50
    """Baselines: the linear warmup when ``OptimConfig.warmup_steps`` is None (the bench's tuned runs used 50)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Baselines: Adam's betas when ``OptimConfig.betas`` is None."""
    color: str | None = None
    """Its colour in the bench figures."""
    label: str | None = None
    """Short label in the bench figures (default: the name)."""

    def optim_config(self, lr: float | None = None) -> OptimConfig:
        """The ``OptimConfig`` this method trains with (``lr``: a swept baseline's learning rate)."""
        return OptimConfig(name=self.base or self.name, **{**self.config, **({} if lr is None else {"lr": lr})})


def _unscheduled(make: Callable[[OptimConfig, list[dict[str, Any]]], torch.optim.Optimizer]) -> Builder:
    return lambda cfg, groups, total_steps: (make(cfg, groups), None)


def _adamw(schedule: Callable[[OptimConfig, torch.optim.Optimizer, int], Any]) -> Builder:
    def build(cfg: OptimConfig, groups: list[dict[str, Any]], total_steps: int):
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        return opt, schedule(cfg, opt, total_steps)

    return build


def _variant(base: Method, name: str, config: Mapping[str, Any], color: str | None) -> Method:
    return replace(base, name=name, build=None, base=base.name, config=dict(config), color=color, label=None)


#: The paper's exact update (every safeguard off) with the paper's LLM settings as the lab used them in 0.1.0
#: (gamma 1, warmup 50, lambda 10, beta annealed over 1000 steps, polyak_beta 0.9, c_warmup 100, r 1).
_PAPER_ROW: dict[str, Any] = {"preset": "paper", "lr": 1.0, "warmup_steps": 50, "weight_decay": 10.0,
                              "sf_beta1_anneal_steps": 1000, "polyak_beta": 0.9, "c_warmup": 100}  # fmt: skip
_LEAN: dict[str, Any] = {"max_inner": 0.0, "max_step_growth": 0.05, "max_step_ratio": 1.0, "bounded_decay": True,
                         "warmup_steps": 50, "lr": 1.0, "weight_decay": 0.0, "c_warmup": 0, "r": 0.0}  # fmt: skip
#: What former defaults had that today's has not: inner momentum 0.5 (from the fifth session to the thirteenth), a
#: 50-step warmup (until the eleventh session) and, until the ninth, the ratio bound at 1. The bench's variants and
#: the robustness suite's configurations named after a former default pin them, so a committed command naming one
#: still trains what it trained then.
FORMER_BETAS: dict[str, Any] = {"betas": (0.5, 0.95)}
FORMER_WARMUP: dict[str, Any] = {**FORMER_BETAS, "warmup_steps": 50}
FORMER_RATIO1: dict[str, Any] = {**FORMER_WARMUP, "max_step_ratio": 1.0}
_SFPLUS = Method("sfplus", build=_unscheduled(_build_sfplus), polyak=True, color="black", label="SF+")
_ADAMW = dict(tuned=True, lr=3e-3, weight_decay=0.1)  # lr suits the small lab models; the bench sweeps it

#: Every method, by name, in the order help texts and tables list them. "sfplus" is the library's default,
#: untouched (the bench's headline); "sfplus-gamma1" the paper's row; "sfplus-lab-v1" the same at gamma 0.3
#: (the lab's default in 0.1.0); the "-wd" ones diagnostics of the paper's row. The baselines come from
#: their own libraries (torch.optim, transformers' WSD schedule, ``schedulefree``).
METHODS: dict[str, Method] = {m.name: m for m in (
    _SFPLUS,
    _variant(_SFPLUS, "sfplus-gamma1", _PAPER_ROW, "tab:red"),
    _variant(_SFPLUS, "sfplus-lab-v1", {**_PAPER_ROW, "lr": 0.3}, None),
    _variant(_SFPLUS, "sfplus-gamma1-wd0", {**_PAPER_ROW, "weight_decay": 0.0}, "tab:brown"),
    _variant(_SFPLUS, "sfplus-gamma1-wd1", {**_PAPER_ROW, "weight_decay": 1.0}, "tab:pink"),
    _variant(_SFPLUS, "sfplus-gamma1-wd20", {**_PAPER_ROW, "weight_decay": 20.0}, "tab:olive"),
    _variant(_SFPLUS, "sfplus-gamma1-wd50", {**_PAPER_ROW, "weight_decay": 50.0}, "tab:cyan"),
    # ablations of the default: one safeguard changed each
    _variant(_SFPLUS, "sfplus-no-max-inner", {"max_inner": OFF}, "tab:gray"),
    _variant(_SFPLUS, "sfplus-max-inner1", {"max_inner": 1.0}, "silver"),
    # former defaults, each pinned to every value that has changed since, so that a committed command naming one
    # still trains what it trained then (inner momentum 0.5 from the fifth session to the thirteenth; a 50-step
    # warmup until the twelfth session; the ratio bound at 1 from the third session to the ninth, 0.5 in the tenth,
    # off from the eleventh)
    # the twelfth and thirteenth sessions' default (inner momentum 0.5)
    _variant(_SFPLUS, "sfplus-b0.5", FORMER_BETAS, "darkgoldenrod"),
    # the eleventh session's default
    _variant(_SFPLUS, "sfplus-no-ratio", {**FORMER_WARMUP, "max_step_ratio": OFF}, "gold"),
    # the default until the tenth session
    _variant(_SFPLUS, "sfplus-ratio1", {**FORMER_WARMUP, "max_step_ratio": 1.0}, "peru"),
    # the default in the tenth session
    _variant(_SFPLUS, "sfplus-ratio0.5", {**FORMER_WARMUP, "max_step_ratio": 0.5}, "sienna"),
    # the default until the fourth session: beta annealed over 1000 steps as the paper advises for LLMs, beta1 0.9,
    # a 100-step warm start
    _variant(_SFPLUS, "sfplus-anneal1000", {**FORMER_RATIO1, "sf_beta1_anneal_steps": 1000, "betas": (0.9, 0.95),
                                            "c_warmup": 100}, "darkgray"),  # fmt: skip
    # the default between the fourth session's two changes: no annealing, the paper's inner momentum 0.9
    _variant(_SFPLUS, "sfplus-beta1-0.9", {**FORMER_RATIO1, "betas": (0.9, 0.95), "c_warmup": 100}, "dimgray"),
    # the fourth session's default: inner momentum 0.8, a 100-step warm start
    _variant(_SFPLUS, "sfplus-cw100-b0.8", {**FORMER_RATIO1, "c_warmup": 100, "betas": (0.8, 0.95)}, "slategray"),
    # candidates: the paper's reference defaults plus the four safeguards and a 50-step warmup (with and without
    # AdamC decay on the matrices)
    _variant(_SFPLUS, "sfplus-lean", {"preset": "paper", **_LEAN}, "tab:olive"),
    _variant(_SFPLUS, "sfplus-lean-wd10", {"preset": "paper", **_LEAN, "weight_decay": 10.0}, "darkkhaki"),
    Method("adamw-wsd", build=_adamw(_wsd_schedule), kind="wsd", color="tab:blue", label="WSD", **_ADAMW),
    Method("adamw-cosine", build=_adamw(_cosine_schedule), kind="decay", color="tab:orange", label="cosine",
           **_ADAMW),
    Method("adamw-linear", build=_adamw(_linear_schedule), kind="decay", color="tab:green", label="linear",
           **_ADAMW),
    Method("sf-adamw", build=_unscheduled(_build_sf_adamw), tuned=True, lr=2.5e-3, weight_decay=0.1,
           color="tab:purple", label="SF-AdamW"),  # schedulefree's own default lr
)}  # fmt: skip


def add_variant(name: str, config: Mapping[str, Any], base: str = "sfplus") -> Method:
    """Register a variant of ``base`` for this process (a probe from the command line; permanent variants are
    entries of ``METHODS`` above). The fields are checked now, so a typo fails before any training."""
    if name in METHODS:
        raise UserError(f"method {name!r} already exists; choose another name")
    if base not in METHODS or METHODS[base].build is None:
        raise UserError(f"unknown base method {base!r}")
    method = _variant(METHODS[base], name, config, None)
    try:
        method.optim_config().resolved()
    except TypeError as exc:  # an unknown field
        raise UserError(f"variant {name!r}: {exc}") from exc
    METHODS[name] = method
    return method


def is_tuned(name: str) -> bool:
    """True for a baseline whose learning rate the bench sweeps; False for a fixed configuration, and for a
    name the registry no longer holds (results files keep old names; those were fixed ScheduleFree+ rows)."""
    method = METHODS.get(name)
    return method is not None and method.tuned


#: The names ``OptimConfig.name`` takes: the base entries, each with a builder.
OPTIMIZERS = tuple(name for name, m in METHODS.items() if m.build is not None)
