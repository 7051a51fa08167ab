"""The two sets of defaults: the library's robust one, and the paper's exact update (``sfplus.PAPER``).

``ScheduleFreePlus(params)`` takes every hyperparameter it is not given from the preset ``"robust"``;
``ScheduleFreePlus(params, **sfplus.PAPER)`` (that is, ``preset="paper"``) from the public reference
code's defaults with every safeguard off, which is the paper's update. An argument given explicitly
always wins, so ``ScheduleFreePlus(params, **sfplus.PAPER, weight_decay=20.0)`` is the paper's update
with λ = 20. ``sfplus.PRESETS`` holds both tables; docs/algorithm.md ("Defaults") says why each robust
value is what it is, with the measurements behind it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT", "HYPERPARAMETERS", "PRESETS", "PAPER", "resolve"]


class _Default:
    """The marker for 'not given': the preset supplies the value."""

    _instance = None

    def __new__(cls) -> _Default:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DEFAULT"

    def __reduce__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()

#: The public reference code's defaults, every safeguard off: the paper's update.
_PAPER: dict[str, Any] = dict(
    lr=1.0,
    betas=(0.9, 0.95),
    eps=1e-8,
    weight_decay=0.0,
    warmup_steps=0,
    sf_beta1=0.9,
    sf_beta1_max=0.965,
    sf_beta1_anneal_steps=0,
    polyak_beta=0.0,
    c_warmup=0,
    r=0.0,
    weight_lr_power=2.0,
    loss_floor=0.0,
    max_step=None,
    max_inner=None,
    max_step_growth=None,
    max_step_ratio=None,
    bounded_decay=False,
    decay_1d=True,
)

#: The library's defaults: one configuration for every model size and run length (nothing in it is a
#: fraction of a horizon or depends on the model's size), chosen on the robustness suite and the
#: language-model benchmark (benchmarks/RESULTS.md).
_ROBUST: dict[str, Any] = dict(
    _PAPER,
    # the paper's inner momentum is 0.9; 0.5 from the fifth session, 0.3 from the fourteenth: fewer seeds stall on the
    # plateau of the language models (docs/algorithm.md, "Defaults")
    betas=(0.3, 0.95),
    # 200 from the twelfth session (50 before): with the ratio bound off, the longer ramp holds the small models'
    # early steps down without a cap tied to the model's size (docs/algorithm.md, "Defaults")
    warmup_steps=200,
    weight_decay=10.0,
    sf_beta1_anneal_steps=0,  # the paper anneals beta over 1000 steps; measured worse here (docs/algorithm.md)
    polyak_beta=0.9,
    c_warmup=0,  # the paper advises 1-2x the warmup; without a warm start measured better (docs/algorithm.md)
    r=1.0,
    max_inner=0.0,
    max_step_growth=0.05,
    # off from the eleventh session (1.0, then 0.5, before): the cap R*P_1 falls as 1/N with the model's size, so
    # on the 10M GPT it held alpha at a tenth of the Polyak step and of the tuned learning rate (docs/algorithm.md)
    max_step_ratio=None,
    bounded_decay=True,
    decay_1d=False,
)

PRESETS: dict[str, dict[str, Any]] = {"robust": _ROBUST, "paper": _PAPER}

#: The constructor arguments a preset supplies, in signature order.
HYPERPARAMETERS: tuple[str, ...] = tuple(_PAPER)

#: The constructor arguments that give the paper's exact update: ``ScheduleFreePlus(params, **PAPER)``.
PAPER: dict[str, Any] = {"preset": "paper"}


def resolve(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter: the given ones, and the preset's for those left at ``DEFAULT``."""
    if preset not in PRESETS:
        raise ValueError(f"Invalid preset value: {preset!r} (expected one of {tuple(PRESETS)})")
    table = PRESETS[preset]
    return {name: (table[name] if value is DEFAULT else value) for name, value in given.items()}
