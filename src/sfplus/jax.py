r"""ScheduleFree+ for JAX: an optax transformation with the PyTorch class's arguments, defaults and update.

>>> import optax, sfplus.jax
>>> opt = sfplus.jax.schedule_free_plus()                       # instead of optax.adamw(lr) + a schedule
>>> state = opt.init(params)
>>> loss, grads = jax.value_and_grad(loss_fn)(params, batch)
>>> updates, state = opt.update(grads, state, params, value=loss)   # the loss, through optax's ``value=``
>>> params = optax.apply_updates(params, updates)
>>> x = sfplus.jax.eval_params(state, params)                   # the average x: evaluate, save, ship this

The training parameters hold y, as in :class:`sfplus.ScheduleFreePlus`; the state holds z, m and v
(one tree each) and the run's scalars, so it is a pytree that checkpoints with any pytree serializer.
Everything is ``jax.jit``-able: no host sync and no Python control flow on traced values (the
non-finite skip and the all-zero-gradient no-op are one ``lax.cond``; the schedule is ``jnp.where``).

The arguments, their names, their defaults (``preset="robust"``, or ``**sfplus.PAPER``) and their
validation are the PyTorch class's, taken from the same pure-Python modules (``_defaults.py``,
``_validation.py``); the scalar formulas of ``_step_size.py`` are written here again with ``jnp`` (they
run on traced values), and ``tests/jax/test_jax_schedule.py`` checks each against the Python one.

Under ``jit`` with sharded arrays, F, I and L are global by construction: ``jnp.sum`` over a sharded
array sums every element once, and the loss a ``jnp.mean`` over a sharded batch is the mean over the
whole batch. docs/jax.md has the details and an example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._defaults import DEFAULT, HYPERPARAMETERS, resolve
from ._step_size import SQRT_HALF_PI, TINY
from ._validation import validate_hyperparameters, validate_options

__all__ = [
    "ScheduleFreePlusState",
    "StepStats",
    "schedule_free_plus",
    "eval_params",
    "STATUS_OK",
    "STATUS_ZERO_GRAD",
    "STATUS_SKIPPED_NONFINITE",
]

#: ``StepStats.status`` values: the step was taken / all gradients were zero (a no-op) / a non-finite loss
#: or gradient was skipped (nothing changed but ``num_skipped``).
STATUS_OK, STATUS_ZERO_GRAD, STATUS_SKIPPED_NONFINITE = 0, 1, 2

_MISSING_LOSS = (
    "schedule_free_plus update() needs this step's loss F (the Polyak step uses it): call "
    "update(grads, state, params, value=loss)"
)


class StepStats(NamedTuple):
    """The last step's scalars, for logging (the JAX counterpart of ``optimizer.stats``)."""

    alpha: jax.Array  # the emergent step α (0 when the step was not taken)
    beta: jax.Array  # β̃ of the step
    c: jax.Array  # the averaging weight
    loss: jax.Array  # F
    inner: jax.Array  # I
    l1: jax.Array  # ‖g‖₁
    e_hat: jax.Array  # the bias-corrected L1 EMA
    status: jax.Array  # STATUS_OK, STATUS_ZERO_GRAD or STATUS_SKIPPED_NONFINITE


class ScheduleFreePlusState(NamedTuple):
    """The optimizer state: the run's scalars (the PyTorch class's group entries) and z, m, v."""

    k: jax.Array  # steps taken (int32)
    e: jax.Array  # the raw L1 EMA e_k (never its bias-corrected copy)
    num_skipped: jax.Array  # non-finite steps skipped (int32)
    p_ref: jax.Array  # the last positive Polyak factor (max_step_growth)
    p_first: jax.Array  # the first positive Polyak factor (max_step_ratio)
    y_beta: jax.Array  # the β̃ that built the y in the parameters (for y <-> x)
    lr_max: jax.Array  # γmax
    weight_sum: jax.Array  # W
    z: Any  # base iterate, a tree like params
    m: Any  # Adam's first moment
    v: Any  # Adam's second moment
    stats: StepStats  # the last step's scalars (logging only; no part of the update reads them)


# ------------------------------------------------------------------------------------------------
# The scalar schedule (_step_size.py) on traced values. Hyperparameters are Python values (static);
# k, α, the statistics and the run state are arrays. Same formulas, same order of operations.
def annealed_beta(k: jax.Array, sf_beta1: float, sf_beta1_max: float, anneal_steps: int) -> jax.Array:
    """β̃_k (eq. 1); ``_step_size.annealed_beta`` on an array k."""
    k = jnp.asarray(k, dtype=_scalar_dtype())
    if anneal_steps == 0:
        return jnp.full_like(k, sf_beta1)
    p = jnp.minimum(k / anneal_steps, 1.0)
    return 1.0 - jnp.exp((1.0 - p) * math.log1p(-sf_beta1) + p * math.log1p(-sf_beta1_max))


def l1_ema_update(e_prev: jax.Array, l1: jax.Array, polyak_beta: float, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(e_k, ê_k)`` (eq. 3); store ``e_k``, use ``ê_k``."""
    dtype = jnp.result_type(e_prev, l1, _scalar_dtype())
    e = polyak_beta * jnp.asarray(e_prev, dtype) + (1.0 - polyak_beta) * SQRT_HALF_PI * jnp.asarray(l1, dtype)
    e_hat = e / (1.0 - jnp.power(polyak_beta, jnp.asarray(k, dtype=dtype)))
    return e, e_hat


def polyak_numerator(loss: jax.Array, inner: jax.Array, loss_floor: float, max_inner: float | None) -> jax.Array:
    """``max(0, F - f* + I)``, with I bounded by ``max_inner`` (κ) when it is set."""
    gap = loss - loss_floor
    if max_inner is not None:
        inner = jnp.minimum(inner, max_inner * jnp.maximum(gap, 0.0))
    return jnp.maximum(0.0, gap + inner)


def growth_bounded_numerator(
    numerator: jax.Array, denominator: jax.Array, p_ref: jax.Array, max_step_growth: float | None
) -> jax.Array:
    """The ``max_step_growth`` (ρ) bound: P at most (1 + ρ)·p_ref; none before the first positive P."""
    if max_step_growth is None:
        return numerator
    return jnp.where(p_ref <= 0.0, numerator, jnp.minimum(numerator, (1.0 + max_step_growth) * p_ref * denominator))


def ratio_bounded_numerator(
    numerator: jax.Array, denominator: jax.Array, p_first: jax.Array, max_step_ratio: float | None
) -> jax.Array:
    """The ``max_step_ratio`` (R) bound: P at most R·p_first; none before the first positive P."""
    if max_step_ratio is None:
        return numerator
    return jnp.where(p_first <= 0.0, numerator, jnp.minimum(numerator, max_step_ratio * p_first * denominator))


def bounded_decay_rate(alpha: jax.Array, weight_decay: float, bounded: bool) -> jax.Array:
    """The effective λ of eq. 5: λ, or λ/(1 + α²λ) with ``bounded_decay``."""
    if not bounded:
        return jnp.full_like(alpha, weight_decay)
    return weight_decay / (1.0 + alpha * alpha * weight_decay)


def warmup_factor(k: jax.Array, warmup_steps: int) -> jax.Array:
    """``min(1, k / warmup_steps)``; 1 when ``warmup_steps == 0``."""
    k = jnp.asarray(k, dtype=_scalar_dtype())
    return jnp.ones_like(k) if warmup_steps == 0 else jnp.minimum(1.0, k / warmup_steps)


def averaging_weight(
    k: jax.Array,
    alpha: jax.Array,
    lr_max_prev: jax.Array,
    weight_sum_prev: jax.Array,
    c_warmup: int,
    r: float,
    weight_lr_power: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(c_k, γmax_k, W_k)`` (eq. 8): c = 1 and W unchanged during the warm start; c = 0 if W is 0."""
    k = jnp.asarray(k, dtype=alpha.dtype)
    lr_max = jnp.maximum(lr_max_prev, alpha)
    w = jnp.power(k, r) * jnp.power(lr_max, weight_lr_power)
    weight_sum = weight_sum_prev + w
    positive = weight_sum > 0.0
    c = jnp.where(positive, w / jnp.where(positive, weight_sum, 1.0), 0.0)
    warm = k <= c_warmup
    return jnp.where(warm, 1.0, c), lr_max, jnp.where(warm, weight_sum_prev, weight_sum)


def _scalar_dtype() -> Any:
    """float64 under ``jax_enable_x64``, else float32: the dtype of the state's scalars."""
    return jnp.zeros((), dtype=float).dtype


def _state_dtype(p: jax.Array) -> Any:
    """fp32 state for bf16/fp16 params (averaging in low precision stalls); else the param's dtype."""
    dtype = jnp.result_type(p)
    return jnp.float32 if dtype in (jnp.bfloat16, jnp.float16) else dtype


# ------------------------------------------------------------------------------------------------
def schedule_free_plus(
    lr: float | Callable[[jax.Array], jax.Array] = DEFAULT,
    betas: tuple[float, float] = DEFAULT,
    eps: float = DEFAULT,
    weight_decay: float = DEFAULT,
    *,
    warmup_steps: int = DEFAULT,
    sf_beta1: float = DEFAULT,
    sf_beta1_max: float = DEFAULT,
    sf_beta1_anneal_steps: int = DEFAULT,
    polyak_beta: float = DEFAULT,
    c_warmup: int = DEFAULT,
    r: float = DEFAULT,
    weight_lr_power: float = DEFAULT,
    loss_floor: float = DEFAULT,
    max_step: float | None = DEFAULT,
    max_inner: float | None = DEFAULT,
    max_step_growth: float | None = DEFAULT,
    max_step_ratio: float | None = DEFAULT,
    bounded_decay: bool = DEFAULT,
    decay_1d: bool = DEFAULT,
    preset: str = "robust",
    nonfinite: str = "skip",
    weight_decay_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """ScheduleFree+ as an optax transformation: ``update(grads, state, params, value=loss)``.

    The arguments are :class:`sfplus.ScheduleFreePlus`'s, with the same names, defaults and presets
    (``preset="robust"`` by default; ``schedule_free_plus(**sfplus.PAPER)`` is the paper's exact update)
    and the same validation; see that class and docs/algorithm.md for each. What differs:

    - ``lr`` (γ, a multiplier, default 1.0) may also be an optax schedule, a function of the number of
      steps taken before this one (0 at the first step), in place of a PyTorch LR scheduler.
    - ``nonfinite``: only ``"skip"`` (a jitted function cannot raise): a NaN/inf loss or gradient leaves
      the parameters and every state entry unchanged but ``num_skipped``; ``StepStats.status`` says so.
    - ``weight_decay_mask``: a tree of bools like the params (or a function of the params returning
      one), True where AdamC decay applies (optax's ``mask`` convention); None decays every leaf. It
      takes the place of PyTorch's param groups with ``weight_decay=0`` (e.g. no decay for biases and
      norms); F, I and L stay global over every leaf.
    - ``foreach``, ``fused`` and ``process_group`` do not apply: XLA fuses the update, and under ``jit``
      with sharded arrays the statistics are global without a process group.
    - The loss-below-``loss_floor`` warning is not given (it would need a host callback).

    ``update`` needs ``params`` (they hold y) and ``value``, this step's loss at y (a scalar: the mean
    over the whole batch, every term of the objective, unscaled, gradients not clipped).
    """
    validate_options(nonfinite, None, None)
    if nonfinite != "skip":
        raise ValueError(
            f"Invalid nonfinite value: {nonfinite!r} for JAX (only 'skip': a jitted update cannot raise; "
            "watch state.num_skipped or state.stats.status instead)"
        )
    given = locals()
    hyper = resolve(preset, {name: given[name] for name in HYPERPARAMETERS})
    if isinstance(hyper["betas"], list):
        hyper["betas"] = tuple(hyper["betas"])
    schedule = hyper["lr"] if callable(hyper["lr"]) else None
    validate_hyperparameters(dict(hyper, lr=1.0) if schedule is not None else hyper, warn=True)
    h = {
        name: (float(value) if name in _FLOATS and value is not None else value)
        for name, value in hyper.items()
        if name != "lr"
    }
    lr_const = None if schedule is not None else float(hyper["lr"])
    beta1, beta2 = (float(b) for b in h["betas"])

    def init_fn(params: Any) -> ScheduleFreePlusState:
        sdt = _scalar_dtype()
        zero = jnp.zeros((), dtype=sdt)
        # z_0 = x_0 = y_0 = the initial params (a copy, so that donating params never donates z).
        z = jax.tree.map(lambda p: jnp.array(p, dtype=_state_dtype(p), copy=True), params)
        m = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=_state_dtype(p)), params)
        v = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=_state_dtype(p)), params)
        beta0 = annealed_beta(jnp.zeros((), dtype=sdt), h["sf_beta1"], h["sf_beta1_max"], h["sf_beta1_anneal_steps"])
        stats = StepStats(zero, beta0, zero, zero, zero, zero, zero, jnp.zeros((), dtype=jnp.int32))
        return ScheduleFreePlusState(
            k=jnp.zeros((), dtype=jnp.int32),
            e=zero,
            num_skipped=jnp.zeros((), dtype=jnp.int32),
            p_ref=zero,
            p_first=zero,
            y_beta=beta0,
            lr_max=jnp.full((), h["eps"], dtype=sdt),
            weight_sum=zero,
            z=z,
            m=m,
            v=v,
            stats=stats,
        )

    def update_fn(
        grads: Any, state: ScheduleFreePlusState, params: Any = None, *, value: Any = None, **extra_args: Any
    ) -> tuple[Any, ScheduleFreePlusState]:
        del extra_args
        if params is None:
            raise ValueError(
                "schedule_free_plus update() needs params (they hold y): update(grads, state, params, value=loss)"
            )
        if value is None:
            raise ValueError(_MISSING_LOSS)
        if jnp.size(value) != 1 or jnp.iscomplexobj(value):
            raise ValueError(
                f"schedule_free_plus update(): the loss must be a real scalar, got shape {jnp.shape(value)} "
                f"and dtype {jnp.result_type(value)} (reduce it with .mean() first)"
            )
        sdt = state.e.dtype
        F = jnp.reshape(jnp.asarray(value), ()).astype(sdt)
        k = state.k + 1
        kf = k.astype(sdt)
        beta = annealed_beta(kf, h["sf_beta1"], h["sf_beta1_max"], h["sf_beta1_anneal_steps"])

        # (a) The global statistics: Σ<g, z - y> and Σ‖g‖₁, each leaf summed in its state dtype. Under jit
        # with sharded leaves each sum covers every element once. <g, z - x> = <g, z - y>/β̃_{k-1}.
        g_leaves, treedef = jax.tree.flatten(grads)
        y_leaves = treedef.flatten_up_to(params)
        z_leaves, m_leaves, v_leaves = (treedef.flatten_up_to(t) for t in (state.z, state.m, state.v))
        G = [jnp.asarray(g).astype(z.dtype) for g, z in zip(g_leaves, z_leaves)]
        Y = [jnp.asarray(y).astype(z.dtype) for y, z in zip(y_leaves, z_leaves)]
        dot = sum((jnp.sum(g * (z - y)).astype(sdt) for g, y, z in zip(G, Y, z_leaves)), jnp.zeros((), sdt))
        l1 = sum((jnp.sum(jnp.abs(g)).astype(sdt) for g in G), jnp.zeros((), sdt))
        inner = beta * (dot / state.y_beta)
        finite = jnp.isfinite(F) & jnp.isfinite(inner) & jnp.isfinite(l1)
        take = finite & (l1 != 0.0)

        # (b) The Polyak step with the safeguards, (c) the averaging weight: all scalars.
        e, e_hat = l1_ema_update(state.e, l1, h["polyak_beta"], kf)
        numerator = polyak_numerator(F, inner, h["loss_floor"], h["max_inner"])
        denominator = jnp.maximum(e_hat, TINY)
        numerator = growth_bounded_numerator(numerator, denominator, state.p_ref, h["max_step_growth"])
        numerator = ratio_bounded_numerator(numerator, denominator, state.p_first, h["max_step_ratio"])
        lr_k = lr_const if schedule is None else jnp.asarray(schedule(state.k), dtype=sdt)
        gamma = lr_k * warmup_factor(kf, h["warmup_steps"])
        alpha = gamma * numerator / denominator
        if h["max_step"] is not None:
            alpha = jnp.minimum(alpha, h["max_step"])
        c, lr_max, weight_sum = averaging_weight(
            kf, alpha, state.lr_max, state.weight_sum, h["c_warmup"], h["r"], h["weight_lr_power"]
        )
        decay_rate = bounded_decay_rate(alpha, h["weight_decay"], h["bounded_decay"])
        p_factor = numerator / denominator
        positive = numerator > 0.0

        # (d) The per-leaf update (functional.py's algebra: y moves directly, x is never formed).
        beta_prev = state.y_beta
        sqrt_bc2 = jnp.sqrt(1.0 - jnp.power(beta2, kf))
        a = beta * (1.0 - c) / beta_prev
        decay = -(alpha**2) * decay_rate  # (5) d = -α²λ
        coef = dict(
            eps_scaled=h["eps"] * sqrt_bc2,
            adam=-alpha * sqrt_bc2 / (1.0 - jnp.power(beta1, kf)),
            decay=decay,
            y_self=a * (1.0 + (1.0 - beta_prev) * decay),
            y_z=-a * (1.0 - beta_prev),
            y_znew=1.0 - a * beta_prev,
        )
        masks = _mask_leaves(weight_decay_mask, params, treedef, len(G))
        if not h["decay_1d"]:  # the robust default: no AdamC decay on 1-D leaves (norm gains, biases)
            masks = [mask and jnp.ndim(y) >= 2 for mask, y in zip(masks, Y)]

        def take_step(_: Any) -> tuple[list, list, list, list]:
            out = ([], [], [], [])
            for g, y, z, m, v, decays in zip(G, Y, z_leaves, m_leaves, v_leaves, masks):
                s = {key: val.astype(z.dtype) for key, val in coef.items()}
                d = s["decay"] if decays else jnp.zeros((), z.dtype)
                y_self = s["y_self"] if decays else (beta * (1.0 - c) / beta_prev).astype(z.dtype)
                m_new = m + (g - m) * (1.0 - beta1)  # (6) m_k
                v_new = v * beta2 + g * g * (1.0 - beta2)  # (6) v_k
                z_dec = z + y * d  # (5) z' = z - α²λ y
                z_new = z_dec + m_new / (jnp.sqrt(v_new) + s["eps_scaled"]) * s["adam"]  # (7) z_k
                y_new = y * y_self + z_dec * s["y_z"] + z_new * s["y_znew"]  # (9, 10) y_k
                for lst, val in zip(out, (y_new, z_new, m_new, v_new)):
                    lst.append(val)
            return out

        def keep(_: Any) -> tuple[list, list, list, list]:
            return list(Y), list(z_leaves), list(m_leaves), list(v_leaves)

        y_new, z_new, m_new, v_new = jax.lax.cond(take, take_step, keep, None)
        updates = treedef.unflatten([(yn - y).astype(jnp.result_type(p)) for yn, y, p in zip(y_new, Y, y_leaves)])

        def pick(new: jax.Array, old: jax.Array) -> jax.Array:
            return jnp.where(take, new, old)

        status = jnp.where(finite, jnp.where(take, STATUS_OK, STATUS_ZERO_GRAD), STATUS_SKIPPED_NONFINITE)
        zero = jnp.zeros((), dtype=sdt)
        new_state = ScheduleFreePlusState(
            k=pick(k, state.k),
            e=pick(e, state.e),
            num_skipped=state.num_skipped + jnp.where(finite, 0, 1).astype(jnp.int32),
            p_ref=pick(jnp.where(positive, p_factor, state.p_ref), state.p_ref),
            p_first=pick(jnp.where(positive & (state.p_first == 0.0), p_factor, state.p_first), state.p_first),
            y_beta=pick(beta, state.y_beta),
            lr_max=pick(lr_max, state.lr_max),
            weight_sum=pick(weight_sum, state.weight_sum),
            z=treedef.unflatten(z_new),
            m=treedef.unflatten(m_new),
            v=treedef.unflatten(v_new),
            stats=StepStats(
                alpha=pick(alpha, zero),
                beta=pick(beta, state.y_beta),
                c=pick(c, zero),
                loss=F,
                inner=inner,
                l1=l1,
                e_hat=pick(e_hat, jnp.full((), jnp.nan, sdt)),
                status=status.astype(jnp.int32),
            ),
        )
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


#: The hyperparameters held as Python floats once validated (ints and flags stay as they are).
_FLOATS = frozenset(
    ("eps", "weight_decay", "sf_beta1", "sf_beta1_max", "polyak_beta", "r", "weight_lr_power", "loss_floor",
     "max_step", "max_inner", "max_step_growth", "max_step_ratio")
)  # fmt: skip


def _mask_leaves(mask: Any, params: Any, treedef: Any, n: int) -> list[bool]:
    """The weight-decay mask as one Python bool per leaf (static: the mask is structure, not data)."""
    if mask is None:
        return [True] * n
    if callable(mask):
        mask = mask(params)
    leaves = treedef.flatten_up_to(mask)
    return [bool(leaf) for leaf in leaves]


def eval_params(state: ScheduleFreePlusState, params: Any) -> Any:
    """The average x, to evaluate, checkpoint and ship: ``x = lerp(y, z, 1 - 1/β̃)`` from the training
    params (which hold y) and the state's z (optax's ``schedule_free_eval_params`` convention)."""
    w = 1.0 - 1.0 / state.y_beta

    def x_of(y: jax.Array, z: jax.Array) -> jax.Array:
        y32 = jnp.asarray(y).astype(z.dtype)
        return (y32 + (z - y32) * w.astype(z.dtype)).astype(jnp.result_type(y))

    return jax.tree.map(x_of, params, state.z)
