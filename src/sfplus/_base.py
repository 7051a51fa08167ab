"""What both ScheduleFree+ classes share: validation, the loss input, the global scalars, modes, state_dict.

A step is split the way the method is (STYLE.md, practice 5):

(a) ``_gather_statistics``: F, I and L, each a global scalar, reduced in float64 in one collective;
(b) ``_step_sizes``: the Polyak step α per group, a pure function of those scalars (``_step_size.py``);
(c) the averaging weights c and β̃ per group (``_step_size.py``);
(d) ``_update_group``: the per-tensor update, which each subclass implements.

Only (d) and the per-tensor statistics differ between the reference and the fast class, so the
scalar schedule is one piece of code, and the fast class can only disagree with the reference on
tensor arithmetic, which the parity tests check.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from . import _distributed as D
from ._defaults import DEFAULT, resolve
from ._step_size import (
    TINY,
    annealed_beta,
    averaging_weight,
    bounded_decay_rate,
    growth_bounded_numerator,
    l1_ema_update,
    polyak_numerator,
    ratio_bounded_numerator,
    warmup_factor,
)
from ._validation import validate_hyperparameters, validate_options

#: Group entries that are one value for the whole optimizer (kept equal across groups).
GLOBAL_HYPERPARAMETERS = ("polyak_beta", "loss_floor", "nonfinite", "max_inner", "max_step_growth", "max_step_ratio")
#: Run state kept in every param group (equal across groups), so ``state_dict`` carries it.
#: ``p_ref`` is the last positive Polyak factor, the reference of the ``max_step_growth`` bound;
#: ``p_first`` the first positive one, the reference of the ``max_step_ratio`` bound.
GLOBAL_STATE = ("k", "e", "num_skipped", "train_mode", "p_ref", "p_first")
#: Run state kept per param group.
GROUP_STATE = ("y_beta", "lr_max", "weight_sum")

_MISSING_LOSS = (
    "{name}.step() needs this step's loss F (the Polyak step uses it): call "
    "optimizer.step(closure) with a closure that returns the loss, or optimizer.step(loss=loss)"
)
_EVAL_MODE = (
    "{name}.step() was called in eval mode: call optimizer.train() before step() "
    "and optimizer.eval() before evaluation or saving"
)


class ScheduleFreePlusBase(torch.optim.Optimizer):
    """Common machinery; see :class:`sfplus.ScheduleFreePlus` for the documentation."""

    #: Per-parameter state keys that are parameter-sized (checked against shapes on load).
    _tensor_state_keys: tuple[str, ...] = ()

    def __init__(
        self,
        params,
        lr: float | torch.Tensor = DEFAULT,
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
        preset: str = "robust",
        nonfinite: str = "skip",
        foreach: bool | None = None,
        fused: bool | None = None,
        process_group: Any = None,
    ) -> None:
        validate_options(nonfinite, foreach, fused)
        hyper = resolve(
            preset,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                warmup_steps=warmup_steps,
                sf_beta1=sf_beta1,
                sf_beta1_max=sf_beta1_max,
                sf_beta1_anneal_steps=sf_beta1_anneal_steps,
                polyak_beta=polyak_beta,
                c_warmup=c_warmup,
                r=r,
                weight_lr_power=weight_lr_power,
                loss_floor=loss_floor,
                max_step=max_step,
                max_inner=max_inner,
                max_step_growth=max_step_growth,
                max_step_ratio=max_step_ratio,
                bounded_decay=bounded_decay,
            ),
        )
        if isinstance(hyper["betas"], list):
            hyper["betas"] = tuple(hyper["betas"])
        defaults = dict(hyper, nonfinite=nonfinite, foreach=foreach, fused=fused)
        self.preset = preset
        self._floor_warned = False
        validate_hyperparameters(defaults, warn=False)
        self._process_group = process_group
        self.stats: dict[str, Any] = {}
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ groups and state
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking it; a group that fails a check is not kept."""
        super().add_param_group(param_group)
        try:
            self._check_new_group(self.param_groups[-1])
        except Exception:
            # The base class has already appended the group: take it back out, so that a caught
            # error leaves the optimizer as it was (and the bad group can never be stepped).
            self.param_groups.pop()
            raise

    def _check_new_group(self, group: dict[str, Any]) -> None:
        validate_options(group["nonfinite"], group["foreach"], group["fused"])
        validate_hyperparameters(group)
        for p in group["params"]:
            if not p.is_floating_point():
                kind = "complex" if p.is_complex() else str(p.dtype)
                raise TypeError(f"{type(self).__name__} does not support {kind} parameters yet (got {p.dtype})")
        first = self.param_groups[0]
        for key in GLOBAL_HYPERPARAMETERS:
            if group[key] != first[key]:
                raise ValueError(
                    f"Invalid {key} value: {group[key]!r} in param group {len(self.param_groups) - 1}; "
                    f"{key} is global and must equal the first group's {first[key]!r}"
                )
        self._backfill(group, template=first if first is not group else None)

    @staticmethod
    def _backfill(group: dict[str, Any], template: dict[str, Any] | None = None) -> None:
        """Fill run-state keys missing from ``group`` (new groups, and older state dicts)."""
        src = template or {}
        group.setdefault("k", src.get("k", 0))
        group.setdefault("e", src.get("e", 0.0))
        group.setdefault("num_skipped", src.get("num_skipped", 0))
        group.setdefault("train_mode", src.get("train_mode", True))
        group.setdefault("p_ref", src.get("p_ref", 0.0))
        group.setdefault("p_first", src.get("p_first", 0.0))
        group.setdefault(
            "y_beta",
            annealed_beta(group["k"], group["sf_beta1"], group["sf_beta1_max"], group["sf_beta1_anneal_steps"]),
        )
        group.setdefault("lr_max", float(group["eps"]))
        group.setdefault("weight_sum", 0.0)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy keep the last step's ``stats`` too (the base class keeps only its own three).

        The process group is not picklable and is left out: a copy uses the default group.
        """
        state = super().__getstate__()
        state["stats"] = dict(self.stats)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("stats", {})
        self.__dict__.setdefault("_process_group", None)
        self.__dict__.setdefault("_floor_warned", False)
        self.__dict__.setdefault("preset", "robust")
        for group in self.param_groups:
            group.setdefault("nonfinite", "skip")
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
            group.setdefault("max_step", None)
            group.setdefault("loss_floor", 0.0)
            group.setdefault("warmup_steps", 0)
            # Saved by version 0.1.0, which had no safeguards: keep the update it was running.
            group.setdefault("max_inner", None)
            group.setdefault("max_step_growth", None)
            group.setdefault("max_step_ratio", None)
            group.setdefault("bounded_decay", False)
            self._backfill(group, template=self.param_groups[0])

    def _global(self, key: str) -> Any:
        return self.param_groups[0][key]

    def _set_global(self, key: str, value: Any) -> None:
        for group in self.param_groups:
            group[key] = value

    @staticmethod
    def _state_dtype(p: torch.Tensor) -> torch.dtype:
        """fp32 state for bf16/fp16 params (averaging in low precision stalls); else the param's dtype."""
        return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype

    # ------------------------------------------------------------------ train / eval
    @property
    def train_mode(self) -> bool:
        """True when the parameters hold y (training); False when they hold x (evaluation)."""
        return bool(self._global("train_mode"))

    @torch.no_grad()
    def train(self) -> None:
        """Put y into the parameters (for training). Idempotent."""
        if not self.train_mode:
            for group in self.param_groups:
                self._to_train(group)
            self._set_global("train_mode", True)

    @torch.no_grad()
    def eval(self) -> None:
        """Put the average x into the parameters (for evaluation, checkpointing, shipping). Idempotent."""
        if self.train_mode:
            for group in self.param_groups:
                self._to_eval(group)
            self._set_global("train_mode", False)

    @contextlib.contextmanager
    def eval_params(self) -> Iterator[None]:
        """Hold x in the parameters inside the block, then restore the previous mode."""
        was_training = self.train_mode
        self.eval()
        try:
            yield
        finally:
            if was_training:
                self.train()

    def _params_with_state(self, group: dict[str, Any]) -> list[torch.Tensor]:
        return [p for p in group["params"] if len(self.state.get(p, ())) > 0]

    # ------------------------------------------------------------------ the step
    def _take_loss(self, closure: Callable[[], Any] | None, loss: Any) -> tuple[torch.Tensor | float, Any]:
        if closure is not None and loss is not None:
            raise TypeError(f"{type(self).__name__}.step() got both a closure and loss=; pass one of them")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ret = loss
        if loss is None:
            raise ValueError(_MISSING_LOSS.format(name=type(self).__name__))
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1 or loss.is_complex():
                raise ValueError(
                    f"{type(self).__name__}.step(): the loss must be a real scalar, got a tensor of "
                    f"shape {tuple(loss.shape)} and dtype {loss.dtype} (reduce it with .mean() first)"
                )
            return loss.detach().reshape(()), ret
        if isinstance(loss, bool) or not isinstance(loss, numbers.Real):
            raise TypeError(
                f"{type(self).__name__}.step(): the loss must be a float or a 0-D tensor, got {type(loss).__name__}"
            )
        return float(loss), ret

    def _active_params(self) -> list[list[torch.Tensor]]:
        """Per group, the params that have a gradient this step."""
        active = []
        for group in self.param_groups:
            params = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                params.append(p)
            active.append(params)
        return active

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:
        """Take one step. The loss F comes from ``closure()`` or ``loss=`` (float or 0-D tensor)."""
        if not self.train_mode:
            raise RuntimeError(_EVAL_MODE.format(name=type(self).__name__))
        if closure is None and loss is None and self._allocate_state_for_checkpoint():
            return None
        loss_local, ret = self._take_loss(closure, loss)
        active = self._active_params()
        k = self._global("k") + 1
        if not any(active):
            self._record(k - 1, status="no_grad")
            return ret
        betas = [
            annealed_beta(k, g["sf_beta1"], g["sf_beta1_max"], g["sf_beta1_anneal_steps"]) for g in self.param_groups
        ]
        F, inner, l1 = self._gather_statistics(loss_local, active, betas)
        if not all(math.isfinite(s) for s in (F, inner, l1)):
            return self._reject_nonfinite(k, F, inner, l1, ret)
        if l1 == 0.0:
            # All-zero gradients: no direction to move in. A full no-op (k not advanced), so that the
            # average does not keep drifting toward z while nothing is learned.
            self._record(k - 1, status="zero_grad", F=F, inner=inner, l1=l1)
            return ret
        e, e_hat = l1_ema_update(self._global("e"), l1, self._global("polyak_beta"), k)
        numerator, denominator = self._polyak_factor(k, F, inner, e_hat)
        alphas, cs = [], []
        for group, params, beta in zip(self.param_groups, active, betas):
            alpha = self._step_size(group, k, numerator, denominator)
            c, group["lr_max"], group["weight_sum"] = averaging_weight(
                k, alpha, group["lr_max"], group["weight_sum"], group["c_warmup"], group["r"], group["weight_lr_power"]
            )
            self._init_state(params)
            decay = bounded_decay_rate(alpha, group["weight_decay"], group["bounded_decay"])
            self._update_group(group, params, k=k, alpha=alpha, beta=beta, c=c, weight_decay=decay)
            group["y_beta"] = beta
            alphas.append(alpha)
            cs.append(c)
        self._set_global("k", k)
        self._set_global("e", e)
        if numerator > 0.0:
            self._set_global("p_ref", numerator / denominator)
            if self._global("p_first") == 0.0:
                self._set_global("p_first", numerator / denominator)
        self._record(k, status="ok", F=F, inner=inner, l1=l1, e_hat=e_hat, alphas=alphas, cs=cs, betas=betas)
        return ret

    def _allocate_state_for_checkpoint(self) -> bool:
        """Allocate the state, change nothing else, when step() comes with no loss and all-zero gradients.

        ``torch.distributed.checkpoint.state_dict`` (get/set_optimizer_state_dict) prepares a fresh
        optimizer that way (zero gradients, lr 0, ``step(closure=None)``) so that a checkpoint can be
        loaded into its state tensors. There is nothing to learn from zero gradients, so k, the
        parameters and every scalar stay as they are. Returns False (the caller then asks for the loss)
        when no parameter has a gradient or some gradient is non-zero.
        """
        active = self._active_params()
        if not any(active) or any(bool(D.local(p.grad).any()) for params in active for p in params):
            return False
        for params in active:
            self._init_state(params)
        self._record(self._global("k"), status="zero_grad")
        return True

    def _polyak_factor(self, k: int, F: float, inner: float, e_hat: float) -> tuple[float, float]:
        """(b) The global Polyak factor P = numerator / denominator of eq. 4, with the safeguards on I and
        on P's growth. Returned as the pair so that α = γ·numerator/denominator is computed exactly as the
        paper's formula when no safeguard is on."""
        floor = self._global("loss_floor")
        if F < floor and not self._floor_warned:
            self._floor_warned = True
            warnings.warn(
                f"{type(self).__name__}: the loss F={F:.6g} at step {k} is below loss_floor={floor:g}, so the "
                "Polyak step is 0 and nothing is learned while it stays there. loss_floor must be a lower bound "
                "of the loss: set it below the lowest value the loss can take (e.g. a Gaussian negative "
                "log-likelihood can go below 0). This warning is shown once.",
                RuntimeWarning,
                stacklevel=4,
            )
        numerator = polyak_numerator(F, inner, floor, self._global("max_inner"))
        denominator = max(e_hat, TINY)
        numerator = growth_bounded_numerator(
            numerator, denominator, self._global("p_ref"), self._global("max_step_growth")
        )
        numerator = ratio_bounded_numerator(
            numerator, denominator, self._global("p_first"), self._global("max_step_ratio")
        )
        return numerator, denominator

    def _step_size(self, group: dict[str, Any], k: int, numerator: float, denominator: float) -> float:
        """α for one group: γ (its lr times the warmup ramp) times P, then the cap (eq. 4)."""
        gamma = float(group["lr"]) * warmup_factor(k, group["warmup_steps"])
        alpha = gamma * numerator / denominator
        return alpha if group["max_step"] is None else min(alpha, group["max_step"])

    def _gather_statistics(
        self, loss_local: torch.Tensor | float, active: list[list[torch.Tensor]], betas: list[float]
    ) -> tuple[float, float, float]:
        """(a) The global F, I = Σ β̃⟨g, z-x⟩ and L = ‖g‖₁: one float64 vector, one collective, one sync."""
        group_handle, world = D.resolve_group(self._process_group)
        device = D.local(next(p.grad for params in active for p in params)).device
        parts = []
        for group, params in zip(self.param_groups, active):
            dot, l1 = self._group_statistics(group, params, world)
            parts.append(torch.stack([dot.to(device), l1.to(device)]))
        stats = torch.cat([torch.as_tensor(loss_local, dtype=torch.float64, device=device).reshape(1) / world] + parts)
        stats = D.all_reduce_sum(stats, group_handle, world).tolist()
        F = stats[0]
        inner = sum(beta * dot for beta, dot in zip(betas, stats[1::2]))
        l1 = sum(stats[2::2])
        return F, inner, l1

    def _reject_nonfinite(self, k: int, F: float, inner: float, l1: float, ret: Any) -> Any:
        what = "loss" if not math.isfinite(F) else "gradient"
        message = (
            f"{type(self).__name__}: non-finite {what} at step {k} (F={F}, I={inner}, ||g||_1={l1})"
        )
        if self._global("nonfinite") == "raise":
            raise FloatingPointError(message + "; nothing was updated")
        self._set_global("num_skipped", self._global("num_skipped") + 1)
        warnings.warn(message + "; step skipped, nothing was updated (nonfinite='skip')", RuntimeWarning, stacklevel=3)
        self._record(k - 1, status="skipped_nonfinite", F=F, inner=inner, l1=l1)
        return ret

    def _record(self, k: int, *, status: str, **values: Any) -> None:
        """Expose this step's scalars for logging (``optimizer.stats``); not run state."""
        alphas = values.get("alphas", [0.0] * len(self.param_groups))
        cs = values.get("cs", [0.0] * len(self.param_groups))
        betas = values.get("betas", [g["y_beta"] for g in self.param_groups])
        self.stats = {
            "k": k,
            "status": status,
            "skipped": status != "ok",
            "alpha": alphas[0],
            "beta": betas[0],
            "c": cs[0],
            "loss": values.get("F", math.nan),
            "inner": values.get("inner", math.nan),
            "l1": values.get("l1", math.nan),
            "e_hat": values.get("e_hat", math.nan),
            "lr_max": self.param_groups[0]["lr_max"],
            "num_skipped": self._global("num_skipped"),
            "alphas": alphas,
            "cs": cs,
            "betas": betas,
        }

    # ------------------------------------------------------------------ subclass hooks
    def _init_state(self, params: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _group_statistics(
        self, group: dict[str, Any], params: list[torch.Tensor], world: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 0-D tensors: Σ⟨g, z - x⟩ and Σ‖g‖₁ over ``params``, each tensor scaled for the reduction."""
        raise NotImplementedError

    def _update_group(self, group: dict[str, Any], params: list[torch.Tensor], **scalars: Any) -> None:
        raise NotImplementedError

    def _to_eval(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _to_train(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state_dict
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load after checking every state tensor's shape against its parameter; fp32 state stays fp32."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        id_to_param: dict[Any, tuple[int, int, torch.Tensor]] = {}
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"loaded state dict's group {gi} has {len(saved['params'])} parameters, this "
                    f"optimizer's has {len(group['params'])}"
                )
            for i, (pid, p) in enumerate(zip(saved["params"], group["params"])):
                id_to_param[pid] = (gi, i, p)
        for pid, param_state in state_dict["state"].items():
            if pid not in id_to_param:
                raise ValueError(f"loaded state dict has state for parameter id {pid!r}, which no group lists")
            gi, i, p = id_to_param[pid]
            unexpected = sorted(set(param_state) - set(self._required_state_keys(p)))
            if param_state and unexpected:
                # e.g. a ScheduleFreePlusReference state dict (x, y) loaded into ScheduleFreePlus: a 'y' there
                # would be taken for an fp32 master copy and silently double the memory.
                raise ValueError(
                    f"state for param {i} in group {gi} has unexpected keys {unexpected} for "
                    f"{type(self).__name__} with a {p.dtype} parameter (expected {list(self._required_state_keys(p))})"
                )
            for key in self._tensor_state_keys:
                value = param_state.get(key)
                if value is None:
                    if key in self._required_state_keys(p):
                        raise ValueError(f"state for param {i} in group {gi} lacks {key!r}")
                    continue
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(
                        f"state {key!r} for param {i} in group {gi} has shape {tuple(value.shape)}, "
                        f"expected {tuple(p.shape)}"
                    )
        super().load_state_dict(state_dict)
        # The base class casts every floating state tensor to the param's dtype (and may alias the
        # caller's tensors). Re-take them from the caller's dict: our own copies, in the state dtype.
        for pid, param_state in state_dict["state"].items():
            _, _, p = id_to_param[pid]
            for key, value in param_state.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    self.state[p][key] = value.to(device=p.device, dtype=self._state_dtype(p), copy=True)

    def _required_state_keys(self, p: torch.Tensor) -> tuple[str, ...]:
        return self._tensor_state_keys
