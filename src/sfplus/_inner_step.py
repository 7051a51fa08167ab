"""The seam between ScheduleFree+'s Polyak/averaging machinery and its inner (base) step.

ScheduleFree+ wraps a base optimizer: the base step moves z along a direction d scaled by the Polyak step
α (docs/algorithm.md, "One step", eqs. 6-7 for Adam), and everything else — β̃, the inner product I, the
Polyak step α itself with its safeguards, the AdamC decay at y (eq. 5), the averaging weights c and the
x and y sequences (eqs. 8-10) — is the same whatever the base step is. What the machinery needs from a
base step is what :class:`InnerStep` lists:

- its hyperparameters' checks (``validate``), and the per-parameter state it keeps (``state_keys``,
  ``init_state``);
- its **Polyak denominator**: the step is α = γ·max(0, F − f* + I)/ê with ê the bias-corrected EMA of
  ``polyak_scale · L``, L = Σ over tensors of ``polyak_statistic(g)``. The denominator estimates
  ⟨g, d⟩ for a unit step along d: for Adam, whose direction has entries near ±1, that is ‖g‖₁, scaled by
  √(π/2) (the ratio of a Gaussian's scale to its mean absolute value);
- the move itself, z ← z − α·d(g, state) (``move``).

``sfplus._adam.ADAM`` is the one base step today. ``ScheduleFreePlusReference`` calls it through this
interface (its class attribute ``inner_step``), so a second base step is one new module with such an
object, and a reference subclass that names it. The fast class (``ScheduleFreePlus``) takes its
hyperparameter checks and Polyak scale from ``inner_step`` too, but its tensor kernels
(``functional.py``) fuse Adam's moments with the y update in one pass over memory: a new base step there
brings kernels of its own (docs/architecture.md, "A base step other than Adam").
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class InnerStep(Protocol):
    """What a base step gives ScheduleFree+ (see the module docstring)."""

    #: Per-parameter state this step keeps besides the machinery's own (z; x and y in the reference).
    state_keys: tuple[str, ...]
    #: The factor of L in the EMA of the Polyak denominator (eq. 3).
    polyak_scale: float

    def validate(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming a bad hyperparameter of this step in ``group``."""
        ...

    def init_state(self, state: dict[str, Any], like: torch.Tensor) -> None:
        """Add this step's state for a parameter whose base iterate z is ``like`` (its shape and dtype)."""
        ...

    def polyak_statistic(self, g: torch.Tensor) -> torch.Tensor:
        """This tensor's share of L, the Polyak denominator before scaling: a float64 0-D tensor."""
        ...

    def move(self, z: torch.Tensor, g: torch.Tensor, state: dict[str, Any], *, alpha: float, k: int,
             group: dict[str, Any]) -> None:  # fmt: skip
        """Update this step's state with the gradient ``g`` and move z in place: z ← z − α·d (step ``k``)."""
        ...
