r"""The per-tensor work of ScheduleFreePlus (d, m, v state): statistics and update, three ways.

- ``single``: a for-loop over tensors (readable; the ground truth of the fast paths);
- ``foreach``: the same operations on lists (``torch._foreach_*``), bit-for-bit equal to ``single``;
- ``fused``: the same math ``torch.compile``d into one pass per tensor (inductor: C++/OpenMP on CPU,
  Triton on CUDA); falls back to ``foreach`` for good if compilation fails.

The parameter holds :math:`y`; the state keeps :math:`d = z - y` rather than :math:`z` (state format 2,
docs/algorithm.md, "State"), so the statistics pass reads only g and d: :math:`\langle g, z - y\rangle =
\langle g, d\rangle` (2 parameter-sized reads instead of g, z, y). Rather than forming :math:`x`, the
update moves :math:`y` and :math:`d` directly.

**The update with z** (state format 1). With :math:`\delta = -\alpha^2\lambda` (AdamC decay, eq. 5),
:math:`z' = z_{k-1} + \delta\,y_{k-1}` and :math:`x_{k-1} = (y_{k-1} - (1-\tilde\beta_{k-1}) z_{k-1}) /
\tilde\beta_{k-1}`, equations 9 and 10 give

.. math::
    y_k = A\,(1 + (1-\tilde\beta_{k-1}) \delta)\, y_{k-1} - A (1-\tilde\beta_{k-1})\, z' + B\, z_k,
    \qquad A = \tilde\beta_k (1 - c_k) / \tilde\beta_{k-1},\quad B = 1 - A\tilde\beta_{k-1},

with :math:`z_k = z' + u`, :math:`u` the Adam step (eqs. 6-7: ``adam``·m/(√v + ε_scaled)).

**The update with d.** Let :math:`w = z_k - z_{k-1} = \delta\,y_{k-1} + u` (the base step's whole move of
z, decay included). Put :math:`z_{k-1} = y_{k-1} + d_{k-1}`, so :math:`z' = (1+\delta) y_{k-1} + d_{k-1}`
and :math:`z_k = z' + u`. The coefficient of :math:`y_{k-1}` in :math:`y_k` is then
:math:`A(1 + (1-\tilde\beta_{k-1})\delta) + (B - A(1-\tilde\beta_{k-1}))(1+\delta) = 1 + B\delta` (using
:math:`B - A(1-\tilde\beta_{k-1}) = 1 - A`), that of :math:`d_{k-1}` is :math:`1 - A`, that of u is B:

.. math::
    y_k = y_{k-1} + B\,w + (1 - A)\, d_{k-1},
    \qquad d_k = z_k - y_k = y_{k-1} + d_{k-1} + w - y_k = A\, d_{k-1} + A\tilde\beta_{k-1}\, w

(:math:`1 - B = A\tilde\beta_{k-1}`). Checks: :math:`c_k = 1` (x follows z) gives A = 0, so
:math:`y_k = z_k` and :math:`d_k = 0`; and :math:`y_k + d_k = y_{k-1} + d_{k-1} + w = z_k` always. So the
update is: m, v (eq. 6), :math:`w = u + \delta y` (eqs. 5, 7), ``y += y_w·w + y_d·d`` and
``d = d_d·d + d_w·w`` with ``y_w`` = B, ``y_d`` = 1 - A, ``d_d`` = A, ``d_w`` = Aβ̃_{k-1}
(:func:`averaging_coefficients`). A skipped step uses A = 1, B = 0, δ = 0 and a zero Adam step (w = 0):
y and d keep their bits.

A tensor without a gradient (idle) keeps x and z while β̃ changes: :math:`y \leftarrow y + \omega d`,
:math:`d \leftarrow (1-\omega) d` with :math:`\omega = 1 - \tilde\beta_k/\tilde\beta_{k-1}` (the old
``y = lerp(y, z, ω)``). Eval mode: :math:`x = \mathrm{lerp}(y, z, 1 - 1/\tilde\beta) = y + (1 - 1/\tilde\beta)
d` (:func:`x_from`). ``tests/optim/test_identities.py`` checks all of this against the explicit form.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any

import torch

from ._adam import adam_coefficients

__all__ = [
    "FUSED_MIN_NUMEL",
    "averaging_coefficients",
    "eval_from_train",
    "resolve_path",
    "same_bits",
    "schedulefree_plus_update",
    "tensor_statistics",
    "train_from_eval",
    "train_from_eval_d",
    "train_from_eval_z",
    "update_coefficients",
    "x_from",
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
    *, k: Any, alpha: Any, beta: Any, beta_prev: Any, c: Any, beta1: float, beta2: float, eps: float,
    weight_decay: Any, ok: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The scalars of one step's tensor update (see the module docstring for the algebra), as one float64
    vector in the order of ``COEF_ORDER``, on the device of ``alpha``.

    ``k``, ``alpha``, ``beta``, ``beta_prev``, ``c`` and ``weight_decay`` are 0-D float64 tensors (or
    floats); nothing is read back to the host. ``ok`` (a 0-D bool tensor) False turns the update into the
    identity: m, v, d and y keep their bits (with the gradient zeroed, see ``_sanitize``). That is how a
    skipped step (non-finite loss or gradient, all-zero gradient) changes nothing without a host branch.
    """
    return update_coefficient_rows(
        k=k, alpha=alpha, beta=beta, beta_prev=beta_prev, c=c, beta1=beta1, beta2=beta2, eps=eps,
        weight_decays=(weight_decay,), ok=ok,
    )[0]  # fmt: skip


def update_coefficient_rows(
    *, k: Any, alpha: Any, beta: Any, beta_prev: Any, c: Any, beta1: float, beta2: float, eps: float,
    weight_decays: tuple[Any, ...], ok: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """:func:`update_coefficients` for several weight decays at once: one row per entry of ``weight_decays``
    (float64, shape ``(len(weight_decays), len(COEF_ORDER))``). The rows differ only in ``decay``; every
    other entry is computed once, so row i holds the very values ``update_coefficients`` gives for
    ``weight_decay=weight_decays[i]``. One tensor for the tensors of a param group with AdamC decay and
    those without (``decay_1d=False``), so that one compiled call updates both (``fused_update_rows``)."""
    device = alpha.device
    values = adam_coefficients(k=k, alpha=alpha, beta1=beta1, beta2=beta2, eps=eps)  # the base step's
    values += averaging_coefficients(alpha=alpha, beta=beta, beta_prev=beta_prev, c=c, weight_decay=weight_decays[0])
    scalars = [_as_device_scalar(v, device) for v in values]
    rows = [scalars]
    for weight_decay in weight_decays[1:]:
        row = list(scalars)
        row[_DECAY] = _as_device_scalar(_decay(alpha, weight_decay), device)
        rows.append(row)
    coef = torch.stack([torch.stack(row) for row in rows]) if len(rows) > 1 else torch.stack(scalars)[None]
    if ok is not None:
        coef = torch.where(ok, coef, constant(_IDENTITY, device))
    return coef


def averaging_coefficients(*, alpha: Any, beta: Any, beta_prev: Any, c: Any, weight_decay: Any) -> list[Any]:
    """The scalars of the decay and of the y and d updates (eqs. 5, 9, 10; the module docstring), in
    ``COEF_ORDER`` after the base step's: whatever the base step, with w = z_k - z_{k-1} (its move of z,
    decay included), y_k = y + y_w·w + y_d·d and d_k = d_d·d + d_w·w."""
    a = beta * (1.0 - c) / beta_prev  # A
    return [
        _decay(alpha, weight_decay),
        1.0 - a * beta_prev,  # y_w = B
        1.0 - a,  # y_d
        a,  # d_d
        a * beta_prev,  # d_w = 1 - B
    ]


def _decay(alpha: Any, weight_decay: Any) -> Any:
    return -(alpha**2) * weight_decay  # (5) δ = -α²λ


def _as_device_scalar(value: Any, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64)
    return torch.full((), value, dtype=torch.float64, device=device)  # a fill, not a host-to-device copy


_CONSTANTS: dict[tuple[tuple[float, ...], torch.device], torch.Tensor] = {}


def constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A float64 vector of ``values`` on ``device``, copied there once (later steps make no copy)."""
    if torch.compiler.is_compiling():  # inside a compiled graph (``step_schedule``): a constant of the graph
        return torch.tensor(values, dtype=torch.float64, device=device)
    key = (values, torch.device(device))
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=torch.float64, device=device)
    return _CONSTANTS[key]


COEF_ORDER = ("beta1", "beta2", "eps_scaled", "adam", "decay", "y_w", "y_d", "d_d", "d_w")
_DECAY = COEF_ORDER.index("decay")
#: The coefficients of the identity update (with the gradient read as 0, so w = 0; eps_scaled stays positive).
_IDENTITY = (1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def schedulefree_plus_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    ys: list[torch.Tensor],
    ds: list[torch.Tensor],
    ms: list[torch.Tensor],
    vs: list[torch.Tensor],
    *,
    idle_ys: list[torch.Tensor],
    idle_ds: list[torch.Tensor],
    idle_params: list[torch.Tensor],
    path: str,
    coef: torch.Tensor | None = None,
    ok: torch.Tensor | None = None,
    has_decay: bool = True,
    idle_weight: torch.Tensor | None = None,
    beta1: float | None = None,
    beta2: float | None = None,
    **scalars: Any,
) -> None:
    """Apply one step to every tensor (``ys[i]`` is ``params[i]`` unless it is an fp32 master copy;
    ``ds[i]`` is d = z - y, updated in place like y, m and v).

    ``coef`` comes from :func:`update_coefficients`; without it, the step's scalars are given as keywords
    (``k, alpha, beta, beta_prev, c, beta1, beta2, eps, weight_decay``, numbers or 0-D tensors) and the
    coefficients are computed here. ``ok`` (0-D bool tensor, or None when every
    gradient is known to be finite) zeroes non-finite gradients on a skipped step, so that the identity
    coefficients leave the state exactly as it was. ``has_decay`` False (λ = 0) leaves out eq. 5.

    Tensors without a gradient this step that already have state (``idle_*``) keep x and z; their
    y is rebuilt with the new β̃ (``y = lerp(y, z, ω) = y + ω·d``, then ``d = (1 - ω)·d``, with
    ``ω = idle_weight = 1 - β̃_k/β̃_{k-1}``, 0 on a skipped step); ``idle_weight`` None when β̃ cannot
    change (no annealing).
    """
    if coef is None:
        coef, has_decay, idle_weight = _coefficients_from(dict(scalars, beta1=beta1, beta2=beta2), ok, ds + idle_ds)
    assert beta1 is not None and beta2 is not None, "beta1 and beta2 (host constants) are needed"
    if params:
        for idx in _buckets(ds):
            P, G, Y, Dd, M, V = ([seq[i] for i in idx] for seq in (params, grads, ys, ds, ms, vs))
            G = [g if g.dtype == d.dtype else g.to(d.dtype) for g, d in zip(G, Dd)]
            s = coef.to(Dd[0].dtype)
            _UPDATE[path](Y, Dd, M, V, G, s, ok, has_decay, beta1, beta2)
            for p, y in zip(P, Y):
                if y is not p:
                    p.copy_(y)
    if idle_weight is not None:
        for p, y, d in zip(idle_params, idle_ys, idle_ds):
            omega = idle_weight.to(y.dtype)
            y.addcmul_(d, omega)  # y + ω(z - y): x and z stay where they are
            d.mul_(1.0 - omega)  # z - y_new = (1 - ω) d
            if y is not p:
                p.copy_(y)


def _coefficients_from(scalars: dict[str, Any], ok: torch.Tensor | None, ds: list[torch.Tensor]):
    device = ds[0].device if ds else torch.device("cpu")
    k, beta, beta_prev = scalars["k"], scalars["beta"], scalars["beta_prev"]
    coef = update_coefficients(
        k=torch.as_tensor(k, dtype=torch.float64, device=device), alpha=_as_device_scalar(scalars["alpha"], device),
        beta=beta, beta_prev=beta_prev, c=scalars["c"], beta1=scalars["beta1"], beta2=scalars["beta2"],
        eps=scalars["eps"], weight_decay=scalars["weight_decay"], ok=ok,
    )  # fmt: skip
    has_decay = not (isinstance(scalars["weight_decay"], (int, float)) and scalars["weight_decay"] == 0.0)
    same_beta = all(isinstance(b, (int, float)) for b in (beta, beta_prev)) and beta == beta_prev
    idle_weight = None if same_beta else _as_device_scalar(1.0 - beta / beta_prev, device)
    return coef, has_decay, idle_weight


def _buckets(ts: list[torch.Tensor]) -> list[list[int]]:
    """Indices grouped by (device, dtype): foreach and compiled kernels want uniform lists."""
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, t in enumerate(ts):
        buckets[(t.device, t.dtype)].append(i)
    return list(buckets.values())


def _sanitize(G: list[torch.Tensor], ok: torch.Tensor | None) -> list[torch.Tensor]:
    """The gradients, zeroed where the step is skipped (``ok`` False), so that 0·g is 0 even for g = inf."""
    if ok is None:
        return G
    return [torch.where(ok, g, 0.0) for g in G]


# The eager update with tensor scalars (``s``: the coefficients in the state dtype, 0-D tensors on the
# device) and host constants only where a skipped step needs no special value (the gradient is 0 then):
# no Python number is taken from a device tensor. On CPU a foreach op is a loop over the tensors, so
# ``_update_foreach`` runs ``_update_single`` there (the same cost, no temporaries to fault in, and the two
# paths equal bit for bit); on CUDA it runs the list operations below, the same algebra.
def _update_single(Y, Dd, M, V, G, s, ok, has_decay: bool, beta1: float, beta2: float) -> None:
    for y, d, m, v, g in zip(Y, Dd, M, V, _sanitize(G, ok)):
        m.mul_(s[0]).add_(g, alpha=1.0 - beta1)  # (6) m_k = β1 m + (1-β1) g
        v.mul_(s[1]).addcmul_(g, g, value=1.0 - beta2)  # (6) v_k = β2 v + (1-β2) g²
        w = v.sqrt().add_(s[2]).div_(s[3])  # (7) (sqrt(v̂) + ε) / step, up to sqrt(1-β2^k)
        torch.div(m, w, out=w)  # (7) u = step·m/(sqrt(v) + ε_scaled): z's Adam move
        if has_decay:
            w.addcmul_(y, s[4])  # (5) w = u - α²λ y = z_k - z_{k-1}
        y.addcmul_(w, s[5]).addcmul_(d, s[6])  # (9, 10) y_k = y + B w + (1 - A) d
        d.mul_(s[7]).addcmul_(w, s[8])  # d_k = z_k - y_k = A d + Aβ̃_{k-1} w


def _update_foreach(Y, Dd, M, V, G, s, ok, has_decay: bool, beta1: float, beta2: float) -> None:
    if Dd[0].device.type == "cpu":
        return _update_single(Y, Dd, M, V, G, s, ok, has_decay, beta1, beta2)
    G = _sanitize(G, ok)
    torch._foreach_mul_(M, s[0])  # (6) m_k
    torch._foreach_add_(M, G, alpha=1.0 - beta1)
    torch._foreach_mul_(V, s[1])  # (6) v_k
    torch._foreach_addcmul_(V, G, G, value=1.0 - beta2)
    denom = torch._foreach_sqrt(V)  # (7) (sqrt(v̂) + ε) / step, up to sqrt(1-β2^k)
    torch._foreach_add_(denom, s[2])
    torch._foreach_div_(denom, s[3])
    W = torch._foreach_div(M, denom)  # (7) u
    del denom
    if has_decay:
        torch._foreach_add_(W, torch._foreach_mul(Y, s[4]))  # (5) w = u - α²λ y
    torch._foreach_add_(Y, torch._foreach_mul(W, s[5]))  # (9, 10) y_k = y + B w + (1 - A) d
    torch._foreach_add_(Y, torch._foreach_mul(Dd, s[6]))
    torch._foreach_mul_(Dd, s[7])  # d_k = A d + Aβ̃_{k-1} w
    torch._foreach_add_(Dd, torch._foreach_mul(W, s[8]))


def _fused_rows_math(Y, Dd, M, V, G, S, rows, ok, c1, c2):
    # One elementwise expression per tensor, so inductor emits one loop that reads y, d, m, v, g once.
    # ``S`` and ``ok`` are tensors: one graph serves every step, whatever the values (c1 = 1-β1 and c2 = 1-β2
    # are constants of the run). ``S`` holds one coefficient row per (param group, decay or not), ``rows``
    # (Python ints, constants of the graph) says which row each tensor takes, so that one call serves the
    # tensors of several param groups.
    for y, d, m, v, g, r in zip(Y, Dd, M, V, G, rows):
        _fused_tensor(y, d, m, v, g, S[r], ok, c1, c2)


def _fused_tensor(y, d, m, v, g, s, ok, c1, c2):
    g = torch.where(ok, g, 0.0)  # a skipped step: 0·g must be 0 even for g = inf
    m_new = m * s[0] + g * c1  # (6)
    v_new = v * s[1] + g * g * c2  # (6)
    w = m_new / ((v_new.sqrt() + s[2]) / s[3]) + y * s[4]  # (5, 7) w = z_k - z_{k-1}
    y.copy_(y + w * s[5] + d * s[6])  # (9, 10)
    d.copy_(d * s[7] + w * s[8])  # d_k = z_k - y_k
    m.copy_(m_new)
    v.copy_(v_new)


def _fused_stats_math(Dd, G, acc_dtype=None):
    # Per tensor <g, d> = <g, z - y> and ||g||_1, accumulated in ``acc_dtype`` (None: the state dtype). The
    # results stay separate 0-D outputs: stacking them inside the graph made inductor's reductions 1.5x
    # slower (6.6 vs 4.4 ms at 15.6M params on CPU, benchmarks/LOG.md), while stacking afterwards costs
    # ~0.2 ms.
    return [torch.sum(g * d, dtype=acc_dtype) for d, g in zip(Dd, G)], [
        torch.sum(torch.abs(g), dtype=acc_dtype) for g in G
    ]


def _stats_accumulation(t: torch.Tensor) -> torch.dtype:
    """The compiled statistics' accumulator: float64 on CPU, where inductor sums float32 through a cascade
    helper that made the pass 1.4x slower than a float64 sum (4.7 vs 3.3 ms at 15.6M, benchmarks/LOG.md,
    2026-11-29) and less exact; the state dtype elsewhere."""
    return torch.float64 if t.device.type == "cpu" else t.dtype


def _stacked_fused_stats(Dd, G):
    acc = _stats_accumulation(Dd[0])
    dots, l1s = _run_compiled("stats", _fused_stats_math, _stats_lists_eager, Dd, G, acc)
    return torch.stack(dots).to(torch.float64), torch.stack(l1s).to(torch.float64)


_compiled: dict[str, Any] = {}


def _compiled_fn(name: str, fn):
    if name not in _compiled:
        # dynamo's guards already pin every input's size and stride (dynamic=False): the compiled code's own
        # per-input assert_size_stride checks (one per tensor, ~190 per step) are left out.
        _compiled[name] = torch.compile(fn, dynamic=False, options={"size_asserts": False})
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


def run_compiled_schedule(stats, run, groups, const) -> dict[str, Any]:
    """``_schedule.step_schedule``, ``torch.compile``d: one call for the step's ~100 scalar operations (run as
    it is once compiling has failed).

    The 0-D tensors go in as 1-element views: dynamo takes a 0-D CPU tensor of float64 or int64 for a
    symbolic number and guards its value through ``.item()`` at every call (a host read, and a recompile
    whenever a value is specialised); a 1-element tensor is an ordinary input.
    """
    run = tuple(_one_element(v) for v in run)
    groups = tuple(tuple(_one_element(v) for v in g) for g in groups)
    return _run_compiled("schedule", _schedule_of_views, _schedule_of_views, stats, run, groups, const)


def _one_element(v: Any) -> Any:
    return v.view(1) if isinstance(v, torch.Tensor) and v.dim() == 0 else v


def _schedule_of_views(stats, run, groups, const) -> dict[str, Any]:
    from ._schedule import step_schedule

    def scalar(v: Any) -> Any:
        return v.reshape(()) if isinstance(v, torch.Tensor) else v

    run = tuple(scalar(v) for v in run)
    groups = tuple(tuple(scalar(v) for v in g) for g in groups)
    return step_schedule(stats, run, groups, const)


def _update_fused(Y, Dd, M, V, G, s, ok, has_decay: bool, beta1: float, beta2: float) -> None:
    # one coefficient row for every tensor: the optimizer's compiled update (fused_update_rows), one graph
    fused_update_rows(Y, Dd, M, V, G, s[None], [0] * len(Y), ok, [has_decay], beta1, beta2)


_UPDATE = {"single": _update_single, "foreach": _update_foreach, "fused": _update_fused}


def fused_update_rows(Y, Dd, M, V, G, S, rows, ok, has_decay, beta1: float, beta2: float) -> None:
    """The fused update of tensors that take different coefficient rows, in one compiled call.

    ``Y, Dd, M, V, G``: one (device, dtype) bucket (G in the state dtype); ``S``: the coefficient rows in
    that dtype (``update_coefficient_rows``, one row per param group and decay); ``rows[i]``: the row of
    tensor i; ``has_decay[r]``: whether row r has AdamC decay (read only by the eager fallback). ``ok``: the
    gate of ``schedulefree_plus_update``. The same numbers as one ``schedulefree_plus_update`` call per row.
    """
    okt = ok if ok is not None else constant((1.0,), S.device)[0] > 0.0

    def fallback(*_):
        for r in sorted(set(rows)):
            idx = [i for i, ri in enumerate(rows) if ri == r]
            sub = ([seq[i] for i in idx] for seq in (Y, Dd, M, V, G))
            _update_foreach(*sub, S[r], ok, has_decay[r], beta1, beta2)

    args = (Y, Dd, M, V, G, S, tuple(rows), okt, 1.0 - beta1, 1.0 - beta2)
    _run_compiled("update_rows", _fused_rows_math, fallback, *args)


def tensor_statistics(
    grads: list[torch.Tensor], ds: list[torch.Tensor | None], path: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tensor, ``<g, d> = <g, z - y>`` and ``||g||_1``: two float64 vectors in the order of ``grads``.

    Each value is accumulated in the state dtype (the compiled path on CPU: in float64). ``ds[i]`` is None
    for a tensor without state yet (then z = y and the dot is 0). The vectors live on the first gradient's
    device. Reads g and d only.
    """
    device = grads[0].device
    stateful = [i for i, d in enumerate(ds) if d is not None]
    buckets = [[stateful[j] for j in idx] for idx in _buckets([ds[i] for i in stateful])]
    if path == "fused" and len(stateful) == len(grads) and len(buckets) == 1 and ds[0].device == device:
        # the common case: one compiled pass over every tensor, results already in place
        G = [g if g.dtype == d.dtype else g.to(d.dtype) for g, d in zip(grads, ds)]
        return _stacked_fused_stats(ds, G)
    dots: list[Any] = [None] * len(grads)
    l1s: list[Any] = [None] * len(grads)
    for i, d in enumerate(ds):
        if d is None:  # no state yet: z = y, so <g, z - y> = 0
            dots[i] = torch.zeros((), dtype=torch.float64, device=device)
            l1s[i] = torch.linalg.vector_norm(grads[i], 1).to(device, torch.float64)
    for idx in buckets:
        Dd = [ds[i] for i in idx]
        G = [grads[i] if grads[i].dtype == d.dtype else grads[i].to(d.dtype) for i, d in zip(idx, Dd)]
        dot, l1 = (_stacked_fused_stats if path == "fused" else _stats_eager)(Dd, G)
        for i, di, li in zip(idx, dot.to(device).unbind(), l1.to(device).unbind()):
            dots[i], l1s[i] = di, li
    return torch.stack(dots), torch.stack(l1s)


def _stats_lists_eager(Dd, G, acc_dtype=None):  # (the eager paths accumulate in the state dtype)
    dots = [torch.dot(g.reshape(-1), d.reshape(-1)) for d, g in zip(Dd, G)]
    return dots, [torch.linalg.vector_norm(g, 1) for g in G]


def _stats_eager(Dd, G):
    dots, l1s = _stats_lists_eager(Dd, G)
    return torch.stack(dots).to(torch.float64), torch.stack(l1s).to(torch.float64)


def x_from(y: torch.Tensor, d: torch.Tensor, beta: float) -> torch.Tensor:
    """x = (y - (1-β)z)/β = lerp(y, z, 1 - 1/β) = y + (1 - 1/β)·d, a new tensor (d = z - y)."""
    return torch.add(y, d, alpha=1.0 - 1.0 / beta)


def eval_from_train(p: torch.Tensor, y: torch.Tensor, d: torch.Tensor, beta: float) -> None:
    """Write x = y + (1 - 1/β)·d (:func:`x_from`) into ``p``.

    ``y`` is a full-precision copy of y, not ``p`` itself (the copy eval() keeps aside, or the fp32 master):
    :func:`train_from_eval` recomputes this x from it to tell which elements of ``p`` were left alone.
    """
    p.copy_(x_from(y, d, beta))


def train_from_eval(p: torch.Tensor, y: torch.Tensor, d: torch.Tensor, beta: float) -> None:
    """Write y back into ``p``: exactly the kept ``y`` wherever ``p`` still holds the x that
    :func:`eval_from_train` wrote from it (d unchanged there); elsewhere ``p`` is the new x, z = y + d
    stays, y = βx + (1-β)z = lerp(x, z, 1 - β) and d = z - y.

    For an fp32 master ``y`` of a low-precision ``p`` the master is updated too (rebuilt where ``p``
    changed). Elementwise, no host synchronisation.
    """
    x_then = x_from(y, d, beta).to(p.dtype)  # what eval_from_train wrote (same kernel)
    kept = same_bits(p, x_then)
    del x_then
    z = y + d
    y_new = torch.where(kept, y, torch.lerp(p.to(y.dtype), z, 1.0 - beta))
    d.copy_(torch.where(kept, d, z.sub_(y_new)))
    del z
    if y.dtype != p.dtype:  # the fp32 master: it follows a changed x too
        y.copy_(y_new)
    p.copy_(y_new)


def train_from_eval_d(p: torch.Tensor, d: torch.Tensor, beta: float) -> None:
    """Eval mode with d but no kept y (an eval-mode checkpoint loaded into an optimizer whose state had no
    ``y``, as ``torch.distributed.checkpoint`` may do): ``p`` holds x = y + (1 - 1/β)·d, so write
    y = x - (1 - 1/β)·d into it (exact up to rounding); d (z - y) is unchanged."""
    p.sub_(d, alpha=1.0 - 1.0 / beta)


def train_from_eval_z(p: torch.Tensor, z: torch.Tensor, beta: float) -> torch.Tensor:
    """Eval mode from a state dict that kept z and no y (saved in eval mode by version 0.1.0, state format
    1): ``p`` holds x; write y = lerp(x, z, 1 - β) into it (exact up to rounding) and return d = z - y,
    computed in ``z``'s storage."""
    p.lerp_(z, 1.0 - beta)
    return z.sub_(p)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise bitwise equality of two tensors of one floating dtype (NaN equals itself, -0 is not +0)."""
    as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.view(as_int) == b.view(as_int)
