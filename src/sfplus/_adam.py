r"""Adam as ScheduleFree+'s base step (docs/algorithm.md, "One step", eqs. 6-7).

.. math::
    m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,\quad
    z_k = z - \alpha_k\, \hat m_k / (\sqrt{\hat v_k} + \epsilon)

with the bias corrections :math:`\hat m = m/(1-\beta_1^k)`, :math:`\hat v = v/(1-\beta_2^k)`. The Polyak
denominator is the L1 norm of the gradient times √(π/2) (eq. 3). ``sfplus._inner_step`` says what a base
step provides; the reference class calls :data:`ADAM` through it, the fast class fuses the same
arithmetic into its kernels (``functional.py``: :func:`adam_coefficients` holds its scalars).
"""

from __future__ import annotations

from typing import Any

import torch

from ._step_size import SQRT_HALF_PI
from ._validation import validate_adam

__all__ = ["ADAM", "AdamStep", "adam_coefficients"]


class AdamStep:
    """Adam's moments m, v and its bias-corrected direction m̂/(√v̂ + ε); hyperparameters ``betas``, ``eps``."""

    state_keys = ("m", "v")
    polyak_scale = SQRT_HALF_PI

    def validate(self, group: dict[str, Any]) -> None:
        validate_adam(group)

    def init_state(self, state: dict[str, Any], like: torch.Tensor) -> None:
        state["m"] = torch.zeros_like(like)
        state["v"] = torch.zeros_like(like)

    def polyak_statistic(self, g: torch.Tensor) -> torch.Tensor:
        return torch.sum(g.abs(), dtype=torch.float64)  # ||g||_1

    def move(self, z: torch.Tensor, g: torch.Tensor, state: dict[str, Any], *, alpha: float, k: int,
             group: dict[str, Any]) -> None:  # fmt: skip
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        m, v = state["m"], state["v"]
        m.mul_(beta1).add_((1 - beta1) * g)  # (6) m_k
        v.mul_(beta2).add_((1 - beta2) * g * g)  # (6) v_k
        m_hat = m / (1 - beta1**k)  # (6) m̂_k
        v_hat = v / (1 - beta2**k)  # (6) v̂_k
        z.sub_(alpha * m_hat / (v_hat.sqrt() + eps))  # (7) z_k


#: The Adam base step (stateless itself: its state lives in the optimizer's per-parameter state).
ADAM = AdamStep()


def adam_coefficients(*, k: Any, alpha: Any, beta1: float, beta2: float, eps: float) -> list[Any]:
    """The fast kernels' Adam scalars (0-D float64 tensors, or floats for β1, β2), in ``COEF_ORDER``:
    m's and v's factors, ε scaled by √(1-β2^k), and the step α·√(1-β2^k)/(1-β1^k) (with its sign), so that
    z += step · m / (√v + ε_scaled) is eq. 7 with both bias corrections folded into scalars."""
    sqrt_bc2 = torch.sqrt(1.0 - torch.pow(beta2, k))  # sqrt(v̂) = sqrt(v) / sqrt(1 - β2^k)
    return [
        beta1,  # m's factor (1 on a skipped step; the gradient is 0 then)
        beta2,  # v's factor
        eps * sqrt_bc2,  # eps_scaled: sqrt(v̂) + ε = (sqrt(v) + ε·sqrt(1-β2^k)) / sqrt(1-β2^k)
        -alpha * sqrt_bc2 / (1.0 - torch.pow(beta1, k)),  # adam: (7) z -= α m̂ / (sqrt(v̂) + ε)
    ]
