r"""ScheduleFree+ written the slow, obvious way: the ground truth every fast path is tested against.

It keeps the three sequences x, y and z (and Adam's m and v) explicitly, five buffers per parameter,
and applies docs/algorithm.md ("One step") one equation per line, in order, with the paper's symbols as names.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _distributed as D
from ._base import ScheduleFreePlusBase
from .functional import same_bits

__all__ = ["ScheduleFreePlusReference"]


class ScheduleFreePlusReference(ScheduleFreePlusBase):
    r"""Reference ScheduleFree+ (explicit x, y, z). Same arguments and scalars as :class:`ScheduleFreePlus`.

    For every parameter with a gradient, step :math:`k` applies (eqs. 6-7 are the base step, Adam, called
    through ``inner_step``: ``sfplus._inner_step``, ``sfplus._adam``)

    .. math::
        \begin{align*}
        z &\leftarrow z_{k-1} - \alpha_k^2 \lambda\, y_{k-1}                                 && (5)\\
        m_k &= \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2 && (6)\\
        z_k &= z - \alpha_k\, \hat m_k / (\sqrt{\hat v_k} + \epsilon)                         && (7)\\
        x_k &= (1 - c_k)\, x_{k-1} + c_k z_k                                                  && (9)\\
        y_k &= \tilde\beta_k x_k + (1 - \tilde\beta_k) z_k                                    && (10)
        \end{align*}

    with the scalars :math:`\alpha_k, c_k, \tilde\beta_k` from the shared schedule (equations 1-4, 8).
    A parameter without a gradient this step keeps its x and z; its y is rebuilt with the new
    :math:`\tilde\beta_k` (10), so every y of a group is built with the same β̃.

    State per parameter: ``x``, ``y``, ``z``, ``m``, ``v`` (fp32 for bf16/fp16 parameters).

    Host synchronisation: this class syncs on purpose. Its statistics are moved to the CPU tensor by
    tensor, and its update reads α, c, β̃ and the skip decision back as Python numbers (the scalar
    schedule itself is the shared, sync-free one of the base class). It is the ground truth, not a
    training path; ``capturable=True`` is accepted but such a step cannot be captured.
    """

    @property
    def _tensor_state_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("x", "y", "z", *self.inner_step.state_keys)

    def _init_state(self, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                y = p.detach().to(self._state_dtype(p), copy=True)  # x_0 = y_0 = z_0 = initial params
                state["x"] = y.clone()
                state["y"] = y
                state["z"] = y.clone()
                self.inner_step.init_state(state, y)  # Adam: m_0 = v_0 = 0

    def _group_statistics(self, group: dict[str, Any], params: list[torch.Tensor], world: int):
        dot = torch.zeros((), dtype=torch.float64)
        l1 = torch.zeros((), dtype=torch.float64)
        for p in params:
            scale = D.contribution_scale(p, world)
            g = D.local(p.grad).to(self._state_dtype(p))
            state = self.state.get(p, {})
            if state:  # no state yet: z = x = p, so <g, z - x> = 0
                x, z = D.local(state["x"]), D.local(state["z"])
                dot = dot + scale * torch.sum(g * (z - x), dtype=torch.float64).cpu()  # <g, z - x>
            l1 = l1 + scale * self.inner_step.polyak_statistic(g).cpu()  # Adam: ||g||_1
        return dot, l1

    def _update_group(self, group: dict[str, Any], params: list[torch.Tensor], **s: Any) -> None:
        # The reference reads every scalar back to the host (one sync each): clarity over speed.
        if not bool(s["ok"]):  # a skipped step (non-finite, or all-zero gradients): nothing changes
            return
        k, alpha, beta, c = (float(s[key]) for key in ("k", "alpha", "beta", "c"))
        k = int(k)
        lam = float(s["weight_decay"])  # λ, or its bounded form (bounded_decay)
        for p in params:
            state = self.state[p]
            lam_p = lam if (p.ndim >= 2 or group["decay_1d"]) else 0.0  # decay_1d=False: no decay on 1-D tensors
            g = D.local(p.grad).to(self._state_dtype(p))
            x, y, z = (D.local(state[key]) for key in ("x", "y", "z"))
            z.sub_(alpha**2 * lam_p * y)  # (5) AdamC decay, at y
            inner_state = {key: D.local(state[key]) for key in self.inner_step.state_keys}
            self.inner_step.move(z, g, inner_state, alpha=alpha, k=k, group=group)  # (6, 7) z_k: the base step
            x.copy_((1 - c) * x + c * z)  # (9) x_k
        for p in self._params_with_state(group):
            state = self.state[p]
            x, y, z = (D.local(state[key]) for key in ("x", "y", "z"))
            y.copy_(beta * x + (1 - beta) * z)  # (10) y_k
            D.local(p).copy_(y)

    def _to_eval(self, group: dict[str, Any]) -> None:
        for p in self._params_with_state(group):
            D.local(p).copy_(D.local(self.state[p]["x"]))

    def _to_train(self, group: dict[str, Any]) -> None:
        # The stored y, except where the parameter no longer holds the stored x (changed in eval mode, e.g.
        # weights loaded into the model): there that value is the new x, and y is rebuilt from it (10).
        beta = float(group["y_beta"])
        for p in self._params_with_state(group):
            x, y, z = (D.local(self.state[p][key]) for key in ("x", "y", "z"))
            param = D.local(p)
            changed = ~same_bits(param, x.to(param.dtype))
            x.copy_(torch.where(changed, param.to(x.dtype), x))
            y.copy_(torch.where(changed, beta * x + (1 - beta) * z, y))  # (10) y = β̃ x + (1-β̃) z
            param.copy_(y)
