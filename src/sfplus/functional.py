r"""The per-tensor work of ScheduleFreePlus (z, m, v state): statistics and update, three ways.

- ``single``: a for-loop over tensors (readable; the ground truth of the fast paths);
- ``foreach``: the same operations on lists (``torch._foreach_*``), bit-for-bit equal to ``single``;
- ``fused``: the same math ``torch.compile``d into one pass per tensor (inductor: C++/OpenMP on CPU,
  Triton on CUDA); falls back to ``foreach`` for good if compilation fails.

The parameter holds :math:`y`. Rather than forming :math:`x`, the update moves :math:`y` directly. With
:math:`d = -\alpha^2\lambda` (AdamC decay, eq. 5), :math:`z' = z_{k-1} + d\,y_{k-1}`, and
:math:`x_{k-1} = (y_{k-1} - (1-\tilde\beta_{k-1}) z_{k-1}) / \tilde\beta_{k-1}`, equations 9 and 10 give

.. math::
    y_k = A\,(1 + (1-\tilde\beta_{k-1}) d)\, y_{k-1} - A (1-\tilde\beta_{k-1})\, z' + B\, z_k,
    \qquad A = \tilde\beta_k (1 - c_k) / \tilde\beta_{k-1},\quad B = 1 - A\tilde\beta_{k-1},

so the update is: z' (eq. 5), the y part that needs z' (before z moves), the Adam step of z (eqs. 6-7),
then ``y += B z_k``. ``tests/optim/test_identities.py`` checks this against the explicit form.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Any

import torch

__all__ = [
    "FUSED_MIN_NUMEL",
    "eval_from_train",
    "resolve_path",
    "schedulefree_plus_update",
    "tensor_statistics",
    "train_from_eval",
    "update_coefficients",
]

#: With ``fused=None``, groups at least this large (elements) use the compiled path: below it, the
#: one-off compile time is not worth it. Measured in benchmarks/optimizer_step.py.
FUSED_MIN_NUMEL = 1 << 20

_compile_failed = False  # set once a torch.compile attempt fails; then the eager paths are used


def resolve_path(foreach: bool | None, fused: bool | None, tensors: list[torch.Tensor]) -> str:
    """``"fused"``, ``"foreach"`` or ``"single"`` for these flags and tensors."""
    if fused is None:  # automatic only when neither path was asked for
        fused = foreach is None and sum(t.numel() for t in tensors) >= FUSED_MIN_NUMEL
    if fused and not _compile_failed:
        return "fused"
    if foreach is None:
        foreach = fused or all(t.is_cuda for t in tensors)
    return "foreach" if foreach else "single"


def update_coefficients(
    *, k: int, alpha: float, beta: float, beta_prev: float, c: float, beta1: float, beta2: float, eps: float,
    weight_decay: float,
) -> dict[str, float]:  # fmt: skip
    """The scalars of one step's tensor update (see the module docstring for the algebra)."""
    sqrt_bc2 = math.sqrt(1.0 - beta2**k)  # sqrt(v̂) = sqrt(v) / sqrt(1 - β2^k)
    a = beta * (1.0 - c) / beta_prev
    decay = -(alpha**2) * weight_decay  # (5) d = -α²λ
    return dict(
        one_minus_beta1=1.0 - beta1,
        beta2=beta2,
        one_minus_beta2=1.0 - beta2,
        eps_scaled=eps * sqrt_bc2,  # sqrt(v̂) + ε = (sqrt(v) + ε·sqrt(1-β2^k)) / sqrt(1-β2^k)
        adam=-alpha * sqrt_bc2 / (1.0 - beta1**k),  # (7) z -= α m̂ / (sqrt(v̂) + ε)
        decay=decay,
        y_self=a * (1.0 + (1.0 - beta_prev) * decay),
        y_z=-a * (1.0 - beta_prev),
        y_znew=1.0 - a * beta_prev,
    )


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
    path: str,
) -> None:
    """Apply step ``k`` to every tensor (``ys[i]`` is ``params[i]`` unless it is an fp32 master copy).

    Tensors without a gradient this step that already have state (``idle_*``) keep x and z; their
    y is rebuilt with the new β̃ (``y = lerp(y, z, 1 - β̃_k/β̃_{k-1})``), a no-op without annealing.
    """
    coef = update_coefficients(
        k=k, alpha=alpha, beta=beta, beta_prev=beta_prev, c=c, beta1=beta1, beta2=beta2, eps=eps,
        weight_decay=weight_decay,
    )  # fmt: skip
    if params:
        for idx in _buckets(zs):
            P, G, Y, Z, M, V = ([seq[i] for i in idx] for seq in (params, grads, ys, zs, ms, vs))
            G = [g if g.dtype == z.dtype else g.to(z.dtype) for g, z in zip(G, Z)]
            _UPDATE[path](Y, Z, M, V, G, coef)
            for p, y in zip(P, Y):
                if y is not p:
                    p.copy_(y)
    if beta != beta_prev:
        for p, y, z in zip(idle_params, idle_ys, idle_zs):
            y.lerp_(z, 1.0 - beta / beta_prev)
            if y is not p:
                p.copy_(y)


def _buckets(zs: list[torch.Tensor]) -> list[list[int]]:
    """Indices grouped by (device, dtype): foreach and compiled kernels want uniform lists."""
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, z in enumerate(zs):
        buckets[(z.device, z.dtype)].append(i)
    return list(buckets.values())


def _update_single(Y, Z, M, V, G, coef: dict[str, float]) -> None:
    for y, z, m, v, g in zip(Y, Z, M, V, G):
        m.lerp_(g, coef["one_minus_beta1"])  # (6) m_k
        v.mul_(coef["beta2"]).addcmul_(g, g, value=coef["one_minus_beta2"])  # (6) v_k
        denom = v.sqrt().add_(coef["eps_scaled"])  # (7) sqrt(v̂) + ε, up to sqrt(1-β2^k)
        if coef["decay"] != 0.0:
            z.add_(y, alpha=coef["decay"])  # (5) z' = z - α²λ y
        y.mul_(coef["y_self"]).add_(z, alpha=coef["y_z"])  # (9, 10) the part of y_k built from y, z'
        z.addcdiv_(m, denom, value=coef["adam"])  # (7) z_k
        y.add_(z, alpha=coef["y_znew"])  # (9, 10) y_k


def _update_foreach(Y, Z, M, V, G, coef: dict[str, float]) -> None:
    torch._foreach_lerp_(M, G, coef["one_minus_beta1"])  # (6) m_k
    torch._foreach_mul_(V, coef["beta2"])  # (6) v_k ...
    torch._foreach_addcmul_(V, G, G, value=coef["one_minus_beta2"])
    denom = torch._foreach_sqrt(V)  # (7) sqrt(v̂) + ε, up to sqrt(1-β2^k)
    torch._foreach_add_(denom, coef["eps_scaled"])
    if coef["decay"] != 0.0:
        torch._foreach_add_(Z, Y, alpha=coef["decay"])  # (5) z' = z - α²λ y
    torch._foreach_mul_(Y, coef["y_self"])  # (9, 10) the part of y_k built from y, z' ...
    torch._foreach_add_(Y, Z, alpha=coef["y_z"])
    torch._foreach_addcdiv_(Z, M, denom, value=coef["adam"])  # (7) z_k
    torch._foreach_add_(Y, Z, alpha=coef["y_znew"])  # (9, 10) y_k


_COEF_ORDER = ("one_minus_beta1", "beta2", "one_minus_beta2", "eps_scaled", "adam", "decay", "y_self", "y_z", "y_znew")


def _fused_math(Y, Z, M, V, G, s):
    # One elementwise expression per tensor, so inductor emits one loop that reads y, z, m, v, g once.
    for y, z, m, v, g in zip(Y, Z, M, V, G):
        m_new = m + (g - m) * s[0]  # (6)
        v_new = v * s[1] + g * g * s[2]  # (6)
        z_dec = z + y * s[5]  # (5)
        z_new = z_dec + m_new / (v_new.sqrt() + s[3]) * s[4]  # (7)
        y.copy_(y * s[6] + z_dec * s[7] + z_new * s[8])  # (9, 10)
        z.copy_(z_new)
        m.copy_(m_new)
        v.copy_(v_new)


def _fused_stats_math(Y, Z, G):
    # Per tensor <g, z - y> and ||g||_1, accumulated in the state dtype as the eager paths do. The results
    # stay separate 0-D outputs: stacking them inside the graph made inductor's reductions 1.5x slower
    # (6.6 vs 4.4 ms at 15.6M params on CPU, benchmarks/LOG.md), while stacking afterwards costs ~0.2 ms.
    return [torch.sum(g * (z - y)) for y, z, g in zip(Y, Z, G)], [torch.sum(torch.abs(g)) for g in G]


def _stacked_fused_stats(Y, Z, G):
    dots, l1s = _run_compiled("stats", _fused_stats_math, _stats_lists_eager, Y, Z, G)
    return torch.stack(dots).to(torch.float64), torch.stack(l1s).to(torch.float64)


_compiled: dict[str, Any] = {}


def _compiled_fn(name: str, fn):
    if name not in _compiled:
        _compiled[name] = torch.compile(fn, dynamic=False)
    return _compiled[name]


def _run_compiled(name: str, fn, fallback, *args):
    global _compile_failed
    if not _compile_failed:
        try:
            return _compiled_fn(name, fn)(*args)
        except Exception as exc:  # a missing compiler, an unsupported platform...
            _compile_failed = True
            warnings.warn(
                f"sfplus: torch.compile of the fused step failed ({type(exc).__name__}: {exc}); "
                "using the foreach path from now on",
                RuntimeWarning,
                stacklevel=4,
            )
    return fallback(*args)


def _update_fused(Y, Z, M, V, G, coef: dict[str, float]) -> None:
    s = torch.tensor([coef[key] for key in _COEF_ORDER], dtype=Z[0].dtype, device=Z[0].device)
    _run_compiled("update", _fused_math, lambda *a: _update_foreach(Y, Z, M, V, G, coef), Y, Z, M, V, G, s)


_UPDATE = {"single": _update_single, "foreach": _update_foreach, "fused": _update_fused}


def tensor_statistics(
    grads: list[torch.Tensor], ys: list[torch.Tensor], zs: list[torch.Tensor], path: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tensor, ``<g, z - y>`` and ``||g||_1``: two float64 vectors in the order of ``grads``.

    Each value is accumulated in the state dtype. ``ys[i]`` / ``zs[i]`` are None for a tensor without
    state yet (then z = y and the dot is 0). The vectors live on the first gradient's device.
    """
    device = grads[0].device
    stateful = [i for i, z in enumerate(zs) if z is not None]
    buckets = [[stateful[j] for j in idx] for idx in _buckets([zs[i] for i in stateful])]
    if path == "fused" and len(stateful) == len(grads) and len(buckets) == 1 and zs[0].device == device:
        # the common case: one compiled pass over every tensor, results already in place
        G = [g if g.dtype == z.dtype else g.to(z.dtype) for g, z in zip(grads, zs)]
        return _stacked_fused_stats(ys, zs, G)
    dots = torch.zeros(len(grads), dtype=torch.float64, device=device)
    l1s = torch.zeros(len(grads), dtype=torch.float64, device=device)
    fresh = [i for i, z in enumerate(zs) if z is None]
    for i in fresh:
        l1s[i] = torch.linalg.vector_norm(grads[i], 1).to(device, torch.float64)
    for idx in buckets:
        Y, Z = [ys[i] for i in idx], [zs[i] for i in idx]
        G = [grads[i] if grads[i].dtype == z.dtype else grads[i].to(z.dtype) for i, z in zip(idx, Z)]
        d, l = (_stacked_fused_stats if path == "fused" else _stats_eager)(Y, Z, G)
        where = torch.tensor(idx, device=device)
        dots[where] = d.to(device)
        l1s[where] = l.to(device)
    return dots, l1s


def _stats_lists_eager(Y, Z, G):
    dots = [torch.dot(g.reshape(-1), torch.sub(z, y).reshape(-1)) for y, z, g in zip(Y, Z, G)]
    return dots, [torch.linalg.vector_norm(g, 1) for g in G]


def _stats_eager(Y, Z, G):
    dots, l1s = _stats_lists_eager(Y, Z, G)
    return torch.stack(dots).to(torch.float64), torch.stack(l1s).to(torch.float64)


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
