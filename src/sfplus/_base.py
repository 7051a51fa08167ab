"""What both ScheduleFree+ classes share: validation, the loss input, the global scalars, modes, state_dict.

A step is split the way the method is (docs/algorithm.md, "One step"):

(a) ``_gather_statistics``: F and, per group, ⟨g, z-x⟩ and L (the base step's Polyak statistic, ‖g‖₁ for
    Adam: ``inner_step``, ``sfplus._inner_step``), one float64 vector reduced in one collective;
(b) ``_schedule``: every scalar of the step from that vector and the run state, in one pure function
    (``_schedule.step_schedule``): I, the skip decision, ê, the Polyak step α per group, the averaging
    weights c and β̃, the new run state; the fast class's fused path runs it compiled;
(c) ``_update_group``: the per-tensor update, which each subclass implements.

Only (c) and the per-tensor statistics differ between the reference and the fast class, so the
scalar schedule is one piece of code, and the fast class can only disagree with the reference on
tensor arithmetic, which the parity tests check.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from . import _distributed as D
from . import _schedule as S
from ._adam import ADAM
from ._defaults import DEFAULT, HYPERPARAMETERS, PRESETS, resolve
from ._inner_step import InnerStep
from ._stats import LazyStats, _host_stats, _step_stats
from ._step_size import annealed_beta
from ._validation import validate_hyperparameters, validate_options

#: Group entries that are one value for the whole optimizer (kept equal across groups).
GLOBAL_HYPERPARAMETERS = (
    "polyak_beta",
    "loss_floor",
    "nonfinite",
    "max_inner",
    "max_step_growth",
    "max_step_ratio",
    "capturable",
)
#: Run state kept in every param group (equal across groups), so ``state_dict`` carries it.
#: ``p_ref`` is the last positive Polyak factor, the reference of the ``max_step_growth`` bound;
#: ``p_first`` the first positive one, the reference of the ``max_step_ratio`` bound.
GLOBAL_STATE = ("k", "e", "num_skipped", "train_mode", "p_ref", "p_first")
#: Run state kept per param group.
GROUP_STATE = ("y_beta", "lr_max", "weight_sum")
#: The version of the state dict's layout, kept in every param group as ``"state_format"``
#: (docs/algorithm.md, "State"). 1 (absent from the dict): version 0.1.0 and after, the fast class keeps
#: ``z``; 2: it keeps ``d = z - y`` instead. The reference class keeps x, y, z in both. Format 1 loads
#: (converted); a larger number than this is refused.
STATE_FORMAT = 2
#: The run-state scalars the step computes, kept as 0-D tensors on the parameters' device from the first
#: step on (Python numbers before it, and in state dicts saved by version 0.1.0): dtype of each.
RUN_SCALARS = {
    "k": torch.int64,
    "num_skipped": torch.int64,
    "e": torch.float64,
    "p_ref": torch.float64,
    "p_first": torch.float64,
    "y_beta": torch.float64,
    "lr_max": torch.float64,
    "weight_sum": torch.float64,
}

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

    #: The base step that moves z (Adam): its hyperparameter checks, state and Polyak denominator
    #: (``sfplus._inner_step`` says what it provides; docs/architecture.md, "A base step other than Adam").
    inner_step: InnerStep = ADAM
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
        decay_1d: bool = DEFAULT,
        preset: str = "robust",
        nonfinite: str = "skip",
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        process_group: Any = None,
    ) -> None:
        validate_options(nonfinite, foreach, fused, capturable)
        given = locals()
        hyper = resolve(preset, {name: given[name] for name in HYPERPARAMETERS})
        if isinstance(hyper["betas"], list):
            hyper["betas"] = tuple(hyper["betas"])
        defaults = dict(hyper, nonfinite=nonfinite, foreach=foreach, fused=fused, capturable=capturable)
        self.preset = preset
        self._floor_warned = False
        validate_hyperparameters(defaults, warn=False, inner_step_checks=self.inner_step.validate)
        self._process_group = process_group
        self.stats: Mapping[str, Any] = {}
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
        validate_options(group["nonfinite"], group["foreach"], group["fused"], group["capturable"])
        validate_hyperparameters(group, inner_step_checks=self.inner_step.validate)
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
        if "y_beta" not in group:
            k = int(group["k"])  # a tensor once stepped: read back here, outside step()
            group["y_beta"] = annealed_beta(k, group["sf_beta1"], group["sf_beta1_max"], group["sf_beta1_anneal_steps"])
        group.setdefault("lr_max", float(group["eps"]))
        group.setdefault("weight_sum", 0.0)
        group.setdefault("state_format", STATE_FORMAT)

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
            group.setdefault("capturable", False)
            # A hyperparameter an older state dict lacks takes the paper preset's value: version 0.1.0 (and
            # before it) ran the paper's update, with no safeguards.
            for name, value in PRESETS["paper"].items():
                group.setdefault(name, value)
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
        """Put y into the parameters (for training). Idempotent.

        Exact: every parameter element that still holds the x that :meth:`eval` wrote gets back the y it
        held before, bit for bit (eval() keeps y aside). An element changed in eval mode (weights loaded
        into the model, an edit) is taken as the new x, and its y is rebuilt from it and z,
        y = β̃·x + (1 − β̃)·z; so is every element of a state dict saved in eval mode by version 0.1.0,
        which kept no y. docs/algorithm.md, "Train and eval modes".
        """
        if not self.train_mode:
            for group in self.param_groups:
                self._to_train(group)
            self._set_global("train_mode", True)

    @torch.no_grad()
    def eval(self) -> None:
        """Put the average x into the parameters (for evaluation, checkpointing, shipping). Idempotent.

        The training-mode values y are kept aside until :meth:`train` puts them back, bit for bit: in the
        fast class that is one parameter-sized copy per full-precision parameter (state ``"y"``) while in
        eval mode; bf16/fp16 parameters have their fp32 master y already, the reference class its
        explicit y. A ``state_dict()`` taken in eval mode carries it, so loading it (with the model's x)
        and calling ``train()`` gives the same y too.
        """
        if self.train_mode:
            for group in self.param_groups:
                self._to_eval(group)
            self._set_global("train_mode", False)

    def y_values(self) -> dict[torch.Tensor, torch.Tensor]:
        """Each parameter's training-mode value y, in either mode, keyed by the parameter; no copies.

        In train mode y is the parameter itself (its fp32 master for a bf16/fp16 parameter of the fast
        class; the reference class's stored y); in eval mode it is the y that :meth:`eval` kept aside (a
        parameter the optimizer has no state for yet has x = y: the parameter itself). The tensors are
        the optimizer's own: they change with the next ``step()``, ``train()`` or ``load_state_dict()``;
        clone what you keep. (For a DTensor parameter they are DTensors laid out like it.)
        """
        return {p: self._y_value(p) for group in self.param_groups for p in group["params"]}

    def _y_value(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state.get(p)
        return state["y"] if state and "y" in state else p

    @contextlib.contextmanager
    def eval_params(self) -> Iterator[None]:
        """Hold x in the parameters inside the block, then restore the previous mode (and y, bit for bit)."""
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
        """Take one step. The loss F comes from ``closure()`` or ``loss=`` (float or 0-D tensor).

        No host synchronisation on the fast paths: every scalar of the step (β̃, α and its safeguards,
        c, the skip decision) is a 0-D tensor on the parameters' device, and a skipped step is a
        ``torch.where`` that keeps the old values, not a Python branch (docs/algorithm.md, "Host
        synchronisation and capture"). ``nonfinite="raise"`` reads the finiteness back (one sync).
        """
        # (In eval mode too: torch.distributed.checkpoint prepares the optimizer that loads an eval-mode
        # checkpoint this way; see _allocate_state_for_checkpoint.)
        if closure is None and loss is None and self._allocate_state_for_checkpoint():
            return None
        if not self.train_mode:
            raise RuntimeError(_EVAL_MODE.format(name=type(self).__name__))
        loss_local, ret = self._take_loss(closure, loss)
        active = self._active_params()
        if not any(active):
            self._record_host(status="no_grad")
            return ret
        device = D.local(next(p.grad for params in active for p in params)).device
        self._scalars_to(device)
        stats = self._gather_statistics(loss_local, active, device)
        run = tuple(self._global(key) for key in ("k", "e", "p_ref", "p_first", "num_skipped"))
        groups = tuple(
            (self._group_lr(i, g, device), g["weight_decay"], g["y_beta"], g["lr_max"], g["weight_sum"])
            for i, g in enumerate(self.param_groups)
        )
        out = self._schedule(stats, run, groups, self._schedule_constants())
        ok, finite = out["ok"], out["finite"]
        if self._global("nonfinite") == "raise" and not bool(finite):  # the one sync, asked for
            raise FloatingPointError(
                self._nonfinite_message(self._global("k") + 1, out["F"], out["inner"], out["l1"])
                + "; nothing was updated"
            )
        gate = None if self._global("nonfinite") == "raise" else ok  # "raise": the gradients are finite
        for group, params, s in zip(self.param_groups, active, out["groups"]):
            self._init_state(params)
            self._update_group(
                group, params, k=out["k_float"], alpha=s["alpha"], beta=s["beta"], c=s["c"],
                weight_decay=s["weight_decay"], ok=ok, gate=gate, coef=s["coef"],
            )  # fmt: skip
            for key in ("lr_max", "weight_sum", "y_beta"):
                self._commit(group, key, s[key])
        self._finish_update()
        for group in self.param_groups:
            for key in ("k", "e", "p_ref", "p_first", "num_skipped"):
                self._commit(group, key, out[key])
        self.stats = LazyStats(
            _step_stats,
            ref=weakref.ref(self),
            status=out["status"],
            k=out["k"],
            F=out["F"],
            inner=out["inner"],
            l1=out["l1"],
            e_hat=out["e_hat"],
            alphas=[s["alpha"] for s in out["groups"]],
            cs=[s["c"] for s in out["groups"]],
            betas=[s["y_beta"] for s in out["groups"]],
            lr_max=out["groups"][0]["lr_max"],
            num_skipped=out["num_skipped"],
            below_floor=out["below_floor"],
        )
        return ret

    def _commit(self, group: dict[str, Any], key: str, value: torch.Tensor) -> None:
        """Store a run-state scalar: in place with ``capturable`` (a CUDA graph replays on fixed
        addresses), else as a new tensor (so a ``state_dict()`` taken earlier never sees it change)."""
        if group.get("capturable", False):
            group[key].copy_(value)
        else:
            group[key] = value

    def _scalars_to(self, device: torch.device) -> None:
        """Make every run-state scalar a 0-D tensor on ``device`` (int64 counters, float64 values).

        A no-op once they are (every step after the first). Python numbers, from a new optimizer or a
        state dict saved by version 0.1.0, are converted here, once; values equal across groups stay
        one tensor. With ``capturable`` each group gets its own tensors, updated in place.
        """
        capturable = self.param_groups[0].get("capturable", False)
        seen: set[int] = set()
        for group in self.param_groups:
            for key, dtype in RUN_SCALARS.items():
                value = group[key]
                if (
                    isinstance(value, torch.Tensor)
                    and value.device == device
                    and value.dtype == dtype
                    and value.dim() == 0
                    and not (capturable and id(value) in seen)
                ):
                    seen.add(id(value))
                    continue
                group[key] = torch.as_tensor(value, dtype=dtype).to(device, copy=True).reshape(())
                seen.add(id(group[key]))

    def _allocate_state_for_checkpoint(self) -> bool:
        """Allocate the state, change nothing else, when step() comes with no loss and all-zero gradients.

        ``torch.distributed.checkpoint.state_dict`` (get/set_optimizer_state_dict) prepares a fresh
        optimizer that way (zero gradients, lr 0, ``step(closure=None)``) so that a checkpoint can be
        loaded into its state tensors. There is nothing to learn from zero gradients, so k, the
        parameters and every scalar stay as they are. Returns False (the caller then asks for the loss)
        when no parameter has a gradient or some gradient is non-zero. (This path reads the gradients
        back to the host: it is not a training step.)
        """
        active = self._active_params()
        if not any(active) or any(bool(D.local(p.grad).any()) for params in active for p in params):
            return False
        for params in active:
            self._init_state(params)
            if not self.train_mode:
                # An optimizer put in eval mode before loading an eval-mode checkpoint: its state then has the
                # structure of that checkpoint (the y kept aside), so DCP loads it and train() is exact.
                self._init_eval_state(params)
        # The run-state scalars take their stepped form (0-D tensors) too, so that the state dict of this
        # optimizer has the structure of a checkpoint saved after training steps (DCP loads into it).
        self._scalars_to(D.local(next(p.grad for params in active for p in params)).device)
        self._record_host(status="zero_grad")
        return True

    def _schedule_constants(self) -> S.ScheduleConstants:
        """The host constants of the step's scalar schedule (``_schedule.step_schedule``): the object of the
        last step while it compares equal (a compiled schedule's guards hold), else the new one."""
        const = S.ScheduleConstants(
            self._global("polyak_beta"), self.inner_step.polyak_scale, self._global("loss_floor"),
            self._global("max_inner"), self._global("max_step_growth"), self._global("max_step_ratio"),
            tuple(
                S.GroupConstants(
                    g["sf_beta1"], g["sf_beta1_max"], g["sf_beta1_anneal_steps"], g["warmup_steps"], g["max_step"],
                    g["c_warmup"], g["r"], g["weight_lr_power"], g["bounded_decay"], self._coefficient_spec(g),
                )
                for g in self.param_groups
            ),
        )  # fmt: skip
        cached = self.__dict__.get("_schedule_cache")
        if cached != const:
            self._schedule_cache = cached = const
        return cached

    def _coefficient_spec(self, group: dict[str, Any]) -> tuple[float, float, float, bool] | None:
        """``GroupConstants.rows`` for ``group``: whether (and how) the step's scalar schedule computes its
        coefficient rows; None by default (the subclass's ``_update_group`` computes what it needs)."""
        return None

    def _group_lr(self, i: int, group: dict[str, Any], device: torch.device) -> Any:
        """Group ``i``'s lr as ``step_schedule`` takes it: a tensor lr as it is, else a float."""
        lr = group["lr"]
        return lr if isinstance(lr, torch.Tensor) else float(lr)

    def _schedule(self, stats: torch.Tensor, run: tuple, groups: tuple, const: S.ScheduleConstants) -> dict[str, Any]:
        """Run the step's scalar schedule: eagerly by default (a subclass may run it compiled)."""
        return S.step_schedule(stats, run, groups, const)

    def _gather_statistics(
        self, loss_local: torch.Tensor | float, active: list[list[torch.Tensor]], device: torch.device
    ) -> torch.Tensor:
        """(a) The global statistics as one float64 vector on ``device``, reduced in one collective, no sync:
        ``[F, dot_0, L_0, dot_1, L_1, ...]``, per group the Σ⟨g, z-x⟩ (without β̃) and L = ‖g‖₁ of its
        tensors (``step_schedule`` forms I = Σ β̃·dot and L = Σ L_i)."""
        group_handle, world = D.resolve_group(self._process_group)
        parts = []
        for group, params in zip(self.param_groups, active):
            dot, l1 = self._group_statistics(group, params, world)
            parts.append(torch.stack([dot.to(device), l1.to(device)]))
        stats = torch.cat([torch.as_tensor(loss_local, dtype=torch.float64, device=device).reshape(1) / world] + parts)
        return D.all_reduce_sum(stats, group_handle, world)

    def _nonfinite_message(self, k: Any, F: Any, inner: Any, l1: Any) -> str:
        F, inner, l1 = float(F), float(inner), float(l1)
        what = "loss" if not math.isfinite(F) else "gradient"
        return f"{type(self).__name__}: non-finite {what} at step {int(k)} (F={F}, I={inner}, ||g||_1={l1})"

    def _record_host(self, *, status: str) -> None:
        """The stats of a step decided on the host (no gradient at all; the checkpoint allocation)."""
        n = len(self.param_groups)
        values = {
            "k": self._global("k"),
            "status": status,
            "skipped": True,
            "alpha": 0.0,
            "beta": self.param_groups[0]["y_beta"],
            "c": 0.0,
            "loss": math.nan,
            "inner": math.nan,
            "l1": math.nan,
            "e_hat": math.nan,
            "lr_max": self.param_groups[0]["lr_max"],
            "num_skipped": self._global("num_skipped"),
            "alphas": [0.0] * n,
            "cs": [0.0] * n,
            "betas": [g["y_beta"] for g in self.param_groups],
        }
        if self.param_groups[0].get("capturable", False):  # copies: those tensors change in place
            values = {key: (v.clone() if isinstance(v, torch.Tensor) else v) for key, v in values.items()}
            values["betas"] = [b.clone() if isinstance(b, torch.Tensor) else b for b in values["betas"]]
        self.stats = LazyStats(_host_stats, values=values)

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

    def _finish_update(self) -> None:
        """Run the tensor updates that ``_update_group`` left pending (its coefficients already computed
        from the run state as it was before the step's commits); none by default."""

    def _init_eval_state(self, params: list[torch.Tensor]) -> None:
        """The state eval() adds to freshly allocated state (the y kept aside); none by default."""

    def _to_eval(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _to_train(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        """The base class's state dict, with the run-state scalars (0-D tensors once stepped) copied.

        A copy, so that a state dict taken now keeps its values while training goes on (with
        ``capturable`` the step updates those tensors in place). They stay tensors on their device, as
        torch.optim's own step counters do: ``torch.save`` and ``torch.load(weights_only=True)`` take them,
        and ``load_state_dict`` restores them bit for bit (also Python numbers, from version 0.1.0).
        """
        state = super().state_dict()
        for group in state["param_groups"]:
            for key in RUN_SCALARS:
                if isinstance(group.get(key), torch.Tensor):
                    group[key] = group[key].clone()
        return state

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
        for gi, saved in enumerate(saved_groups):
            version = saved.get("state_format", 1)
            if not isinstance(version, int) or not 1 <= version <= STATE_FORMAT:
                raise ValueError(
                    f"loaded state dict's group {gi} has state_format {version!r}; this version of sfplus reads "
                    f"formats 1 to {STATE_FORMAT} (a newer sfplus saved it?)"
                )
        for pid, param_state in state_dict["state"].items():
            if pid not in id_to_param:
                raise ValueError(f"loaded state dict has state for parameter id {pid!r}, which no group lists")
            gi, i, p = id_to_param[pid]
            train_mode = bool(saved_groups[gi].get("train_mode", True))
            if not param_state:
                continue
            missing = self._missing_state_keys(p, param_state)
            if missing:
                raise ValueError(f"state for param {i} in group {gi} lacks {missing[0]!r}")
            unexpected = sorted(set(param_state) - set(self._allowed_state_keys(p, train_mode)))
            if unexpected:
                # e.g. a ScheduleFreePlusReference state dict (x, y) loaded into ScheduleFreePlus: a 'y' there
                # would be taken for an fp32 master copy and silently double the memory.
                expected = list(self._allowed_state_keys(p, train_mode))
                raise ValueError(
                    f"state for param {i} in group {gi} has unexpected keys {unexpected} for "
                    f"{type(self).__name__} with a {p.dtype} parameter (expected {expected})"
                )
            for key in self._tensor_state_keys:
                value = param_state.get(key)
                if value is not None and tuple(value.shape) != tuple(p.shape):
                    raise ValueError(
                        f"state {key!r} for param {i} in group {gi} has shape {tuple(value.shape)}, "
                        f"expected {tuple(p.shape)}"
                    )
        # An older format's entries in this one (format 1: z -> d); a new dict, the caller's is left alone.
        upgraded = {}
        for pid, param_state in state_dict["state"].items():
            gi, i, p = id_to_param[pid]
            train_mode = bool(saved_groups[gi].get("train_mode", True))
            try:
                upgraded[pid] = self._upgrade_param_state(p, param_state, train_mode) if param_state else param_state
            except ValueError as exc:
                raise ValueError(f"state for param {i} in group {gi} {exc}") from None
        state_dict = {
            **state_dict,
            "state": upgraded,
            "param_groups": [{**saved, "state_format": STATE_FORMAT} for saved in saved_groups],
        }
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

    def _missing_state_keys(self, p: torch.Tensor, param_state: dict[str, Any]) -> list[str]:
        """The required keys a loaded entry for ``p`` lacks."""
        return [key for key in self._required_state_keys(p) if key not in param_state]

    def _upgrade_param_state(self, p: torch.Tensor, param_state: dict[str, Any], train_mode: bool) -> dict[str, Any]:
        """A loaded entry for ``p`` in the current format (a new dict when it changes); a ValueError's text
        is put after "state for param i in group g"."""
        return param_state

    def _allowed_state_keys(self, p: torch.Tensor, train_mode: bool) -> tuple[str, ...]:
        """The keys a state dict may hold for ``p`` (in eval mode, also the y that eval() keeps aside)."""
        return self._required_state_keys(p)
