r"""The per-tensor update of ScheduleFreePlus (z, m, v state), as a for-loop and as a foreach path.

The parameter holds :math:`y`. Rather than forming :math:`x`, the update moves :math:`y` directly.
With :math:`u = z_k - z_{k-1} = -\alpha^2\lambda y_{k-1} - \alpha \hat m_k / (\sqrt{\hat v_k} + \epsilon)`
and :math:`x_{k-1} = (y_{k-1} - (1-\tilde\beta_{k-1}) z_{k-1}) / \tilde\beta_{k-1}`, equations 9 and 10 give

.. math::
    y_k = y_{k-1} + (1 - A)(z_{k-1} - y_{k-1}) + (1 - A\tilde\beta_{k-1})\,u,
    \qquad A = \tilde\beta_k (1 - c_k) / \tilde\beta_{k-1},

which ``tests/optim/test_identities.py`` checks against the explicit form. Both paths run the same
operations in the same order, so they agree bit for bit.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

__all__ = ["schedulefree_plus_update", "eval_from_train", "train_from_eval", "y_coefficients"]


def y_coefficients(beta: float, beta_prev: float, c: float) -> tuple[float, float]:
    """``(A, B)`` with ``y_k = lerp(y_{k-1}, z_{k-1}, 1 - A) + B·u`` (the fused form of eqs. 9-10)."""
    a = beta * (1.0 - c) / beta_prev
    return a, 1.0 - a * beta_prev


def schedulefree_plus_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    ys: list[torch.Tensor],
    zs: list[torch.Tensor],
    ms: list[torch.Tensor],
    vs: list[torch.Tensor],
    *,
    idle_ys: list[torch.Tensor],
    idle_zs: list[torch.Tensor],
    idle_params: list[torch.Tensor],
    k: int,
    alpha: float,
    beta: float,
    beta_prev: float,
    c: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    foreach: bool,
) -> None:
    """Apply step ``k`` to every tensor (``ys[i]`` is ``params[i]`` unless it is an fp32 master copy).

    Tensors without a gradient this step that already have state (``idle_*``) keep x and z; their
    y is rebuilt with the new β̃ (``y = lerp(y, z, 1 - β̃_k/β̃_{k-1})``), a no-op without annealing.
    """
    a, b = y_coefficients(beta, beta_prev, c)
    scalars = dict(
        one_minus_beta1=1.0 - beta1,
        beta2=beta2,
        one_minus_beta2=1.0 - beta2,
        sqrt_bc2=math.sqrt(1.0 - beta2**k),  # sqrt(v̂) = sqrt(v) / sqrt(1 - β2^k)
        step=-alpha / (1.0 - beta1**k),  # -α m̂ = -α m / (1 - β1^k)
        eps=eps,
        decay=-(alpha**2) * weight_decay,  # (5) AdamC: -α²λ y
        lerp_z=1.0 - a,
        add_u=b,
    )
    if params:
        (_multi_tensor if foreach else _single_tensor)(params, grads, ys, zs, ms, vs, **scalars)
    if beta != beta_prev:
        for p, y, z in zip(idle_params, idle_ys, idle_zs):
            y.lerp_(z, 1.0 - beta / beta_prev)
            if y is not p:
                p.copy_(y)


def _single_tensor(params, grads, ys, zs, ms, vs, *, one_minus_beta1, beta2, one_minus_beta2, sqrt_bc2, step,
                   eps, decay, lerp_z, add_u) -> None:  # fmt: skip
    for p, g, y, z, m, v in zip(params, grads, ys, zs, ms, vs):
        g = g.to(m.dtype)
        m.lerp_(g, one_minus_beta1)  # (6) m_k
        v.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)  # (6) v_k
        u = v.sqrt().div_(sqrt_bc2).add_(eps).reciprocal_().mul_(m).mul_(step)  # (7) -α m̂/(√v̂+ε)
        if decay != 0.0:
            u.add_(y, alpha=decay)  # (5) -α²λ y_{k-1}
        y.lerp_(z, lerp_z)  # (9, 10) y moves toward z_{k-1} ...
        y.add_(u, alpha=add_u)  # ... and along the z update
        z.add_(u)  # (5, 7) z_k
        if y is not p:
            p.copy_(y)


def _multi_tensor(params, grads, ys, zs, ms, vs, *, one_minus_beta1, beta2, one_minus_beta2, sqrt_bc2, step,
                  eps, decay, lerp_z, add_u) -> None:  # fmt: skip
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, z in enumerate(zs):
        buckets[(z.device, z.dtype)].append(i)
    for idx in buckets.values():
        P, Y, Z, M, V = ([seq[i] for i in idx] for seq in (params, ys, zs, ms, vs))
        G = [grads[i].to(M[0].dtype) for i in idx]
        torch._foreach_lerp_(M, G, one_minus_beta1)  # (6) m_k
        torch._foreach_mul_(V, beta2)  # (6) v_k ...
        torch._foreach_addcmul_(V, G, G, value=one_minus_beta2)
        U = torch._foreach_sqrt(V)  # (7) -α m̂/(√v̂+ε) ...
        torch._foreach_div_(U, sqrt_bc2)
        torch._foreach_add_(U, eps)
        torch._foreach_reciprocal_(U)
        torch._foreach_mul_(U, M)
        torch._foreach_mul_(U, step)
        if decay != 0.0:
            torch._foreach_add_(U, Y, alpha=decay)  # (5) -α²λ y_{k-1}
        torch._foreach_lerp_(Y, Z, lerp_z)  # (9, 10) y moves toward z_{k-1} ...
        torch._foreach_add_(Y, U, alpha=add_u)  # ... and along the z update
        torch._foreach_add_(Z, U)  # (5, 7) z_k
        for p, y in zip(P, Y):
            if y is not p:
                p.copy_(y)


def eval_from_train(p: torch.Tensor, y: torch.Tensor, z: torch.Tensor, beta: float) -> None:
    """Write x = (y - (1-β)z)/β = lerp(y, z, 1 - 1/β) into ``p`` (``y`` is ``p`` or its fp32 master)."""
    if y is p:
        p.lerp_(z, 1.0 - 1.0 / beta)
    else:
        p.copy_(torch.lerp(y, z, 1.0 - 1.0 / beta))


def train_from_eval(p: torch.Tensor, y: torch.Tensor, z: torch.Tensor, beta: float) -> None:
    """Write y = βx + (1-β)z = lerp(x, z, 1 - β) back into ``p`` (exact copy from an fp32 master)."""
    if y is p:
        p.lerp_(z, 1.0 - beta)
    else:
        p.copy_(y)
