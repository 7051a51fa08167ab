r"""ScheduleFreePlus: the production optimizer. Three buffers per parameter (d = z - y, m, v), a foreach path."""

from __future__ import annotations

from typing import Any

import torch

from . import _distributed as D
from . import functional
from ._base import ScheduleFreePlusBase
from .functional import (
    eval_from_train,
    fused_update_rows,
    resolve_path,
    run_compiled_schedule,
    schedulefree_plus_update,
    tensor_statistics,
    train_from_eval,
    train_from_eval_d,
    train_from_eval_z,
    update_coefficients,
)

__all__ = ["ScheduleFreePlus"]


class ScheduleFreePlus(ScheduleFreePlusBase):
    r"""ScheduleFree+: learning-rate-free, schedule-free AdamC with Polyak steps (Defazio, 2026).

    The model's parameters hold :math:`y` while training and the average :math:`x` in eval mode;
    the state keeps only the base iterate, as its offset :math:`d = z - y` from the parameter, and Adam's
    moments. Step :math:`k` computes

    .. math::
        \begin{align*}
        \tilde\beta_k &= 1 - \exp\big((1-p)\log(1-\beta_{sf}) + p\log(1-\beta_{max})\big),\;
            p = \min(k / T_{anneal}, 1)                                                        && (1)\\
        I_k &= \textstyle\sum \tilde\beta_k \langle g_k, z_{k-1} - x_{k-1} \rangle            && (2)\\
        e_k &= \beta_p e_{k-1} + (1-\beta_p)\sqrt{\pi/2}\,\|g_k\|_1,\quad
            \hat e_k = e_k / (1 - \beta_p^k)                                                   && (3)\\
        \alpha_k &= \min\big(\gamma_k \max(0, F_k - f^* + I_k) / \hat e_k,\ \alpha_{cap}\big)  && (4)\\
        z &\leftarrow z_{k-1} - \alpha_k^2 \lambda y_{k-1}                                     && (5)\\
        m_k &= \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2 && (6)\\
        z_k &= z - \alpha_k \hat m_k / (\sqrt{\hat v_k} + \epsilon)                            && (7)\\
        c_k &= 1 \text{ for } k \le C_{warmup},\ \text{else } w_k / W_k,\
            w_k = k^r \gamma_{max,k}^{p_w}                                                     && (8)\\
        x_k &= (1 - c_k) x_{k-1} + c_k z_k                                                     && (9)\\
        y_k &= \tilde\beta_k x_k + (1 - \tilde\beta_k) z_k                                     && (10)
        \end{align*}

    Symbols to arguments: :math:`\gamma` = ``lr`` (times the ``warmup_steps`` ramp), :math:`\beta_1,
    \beta_2` = ``betas``, :math:`\epsilon` = ``eps``, :math:`\lambda` = ``weight_decay``,
    :math:`\beta_{sf}` = ``sf_beta1``, :math:`\beta_{max}` = ``sf_beta1_max``, :math:`T_{anneal}` =
    ``sf_beta1_anneal_steps``, :math:`\beta_p` = ``polyak_beta``, :math:`C_{warmup}` = ``c_warmup``,
    :math:`r` = ``r``, :math:`p_w` = ``weight_lr_power``, :math:`f^*` = ``loss_floor``,
    :math:`\alpha_{cap}` = ``max_step``. The safeguards (``max_inner``, ``max_step_growth``,
    ``max_step_ratio``, ``bounded_decay``) change eqs. 4 and 5 as docs/algorithm.md ("Defaults") writes out.
    F, I and L are global: over all groups and, when
    ``torch.distributed`` is initialised, over all ranks (F the mean, I and L each element once).

    Defaults: every hyperparameter left unset comes from ``preset``: ``"robust"`` (the library's default:
    the paper's LLM settings plus four safeguards) or ``"paper"`` (the public reference code's defaults,
    every safeguard off: the paper's exact update; ``**sfplus.PAPER`` selects it). ``sfplus.PRESETS`` holds
    both tables; docs/algorithm.md ("Defaults") gives each value's reason and measurements.

    Args:
        params: an iterable of tensors, of dicts (param groups) or of ``(name, tensor)`` pairs.
        lr: γ, a multiplier of the Polyak step, not a learning rate to tune (1.0 in both presets). An
            outside LR scheduler that changes it keeps working.
        betas: (β1, β2), the inner Adam momentum and second-moment EMA (robust (0.3, 0.95), paper (0.9, 0.95)).
        eps: added to sqrt(v̂); also γmax_0 (1e-8; must be > 0).
        weight_decay: λ, AdamC decay scaled by α²; typical 5-50, not AdamW's 0.1 (robust 10, paper 0).
        warmup_steps: linear ramp of γ over this many steps, never a fraction of a horizon (robust 200).
        sf_beta1: β_sf, the interpolation weight of y between x and z, in (0, 1) (0.9).
        sf_beta1_max: β_max, the value β̃ is annealed to (0.965).
        sf_beta1_anneal_steps: T_anneal, steps of log-space annealing; 0 disables it (robust 0, which
            measured better than the paper's 1000 on every problem of benchmarks/RESULTS.md).
        polyak_beta: β_p, EMA of the L1 norm; 0.9 smooths noisy steps (robust 0.9, paper 0).
        c_warmup: C_warmup, steps during which x follows z exactly; the paper advises 1-2x ``warmup_steps``
            (robust 0: no warm start; paper 0).
        r: averaging power; 1 for long runs (robust 1, paper 0).
        weight_lr_power: p_w, power of γmax in the averaging weights (2).
        loss_floor: f*, a known lower bound of the loss; 0 suits cross-entropy (0).
        max_step: α_cap, an upper bound on α (None).
        max_inner: κ, safeguard: I enters eq. 4 as min(I, κ·max(F - f*, 0)) (robust 0, paper None).
        max_step_growth: ρ, safeguard: the Polyak factor grows at most (1 + ρ)x per step (robust 0.05).
        max_step_ratio: R, safeguard: the Polyak factor never exceeds R times its first value (robust: off).
        bounded_decay: safeguard: AdamC decay α²λ/(1 + α²λ), never more than all of y (robust True).
        decay_1d: whether the AdamC decay also applies to 1-D tensors, norm gains and biases (robust False:
            ``model.parameters()`` decays what the usual two param groups would; paper True).
        preset: ``"robust"`` (default) or ``"paper"``: where unset hyperparameters come from.
        nonfinite: what a NaN/inf loss or gradient does: ``"skip"`` (default: nothing changes, a
            counter and a warning) or ``"raise"`` (FloatingPointError naming the step).
        foreach: use the multi-tensor path (``torch._foreach_*``); None picks it on CUDA.
        fused: run the update as ``torch.compile``d kernels, one pass over memory per tensor (4.5x
            faster than foreach at 15.6M params on CPU, benchmarks/RESULTS.md; the first step compiles,
            falls back to foreach if compiling fails). None picks it for param groups of at least
            2**20 elements when foreach is None too.
        capturable: keep every run-state scalar on the device and update it in place, so that a step
            can be captured in a CUDA graph (as ``torch.optim.Adam``'s flag; the same numbers, bit for
            bit). Must be a bool.
        process_group: the data-parallel group for F, I, L (default: the world group when
            ``torch.distributed`` is initialised).

    Host synchronisation: a step on the foreach or fused path with a tensor loss never reads a device
    value back (every scalar is a 0-D tensor; a skipped step is a ``torch.where``, not a branch).
    ``nonfinite="raise"`` syncs once per step to raise; the for-loop path (``foreach=False``) does not
    sync either but launches a kernel per tensor. docs/algorithm.md, "Host synchronisation and capture".

    State (format 2, ``sfplus._base.STATE_FORMAT``; docs/algorithm.md, "State"):
        per parameter: ``d`` = z - y (the base iterate z as its offset from y, so that the statistics read
        g and d only), ``m``, ``v`` (Adam moments), all in the parameter's dtype, or fp32 with an fp32 master
        copy ``y`` for bf16/fp16 parameters (averaging in low precision stalls); in eval mode also ``y`` for
        a full-precision parameter (the y that ``eval()`` keeps aside so that ``train()`` is exact; dropped
        by ``train()``). z itself is y + d (:meth:`z_values`). Per group: ``state_format`` (2), ``k`` (steps
        taken), ``e`` (the raw L1 EMA, never its bias-corrected copy), ``num_skipped``, ``train_mode``,
        ``y_beta`` (the β̃ that built y, for an exact y ↔ x conversion), ``lr_max`` (γmax) and
        ``weight_sum`` (W); from the first step on, all but ``train_mode`` and ``state_format`` are 0-D
        tensors on the parameters' device (int64 ``k``, ``num_skipped``). State dicts of format 1 (version
        0.1.0 and later until format 2: ``z`` instead of ``d``) load, z converted to d = z - y (y: the kept
        or master ``y``, else the parameter, so load the model's weights first).

    Each step's scalars (k, α, β̃, c, F, I, ‖g‖₁, skipped, ...) are in ``optimizer.stats``, a mapping
    that reads them back to the host (one transfer) when first read. The warnings of a skipped
    non-finite step and of a loss below ``loss_floor`` are raised then.

    References:
        Defazio, ScheduleFree+: Scaling Learning-Rate-Free & Schedule-Free Learning to Large Language
        Models, arXiv:2605.19095. Defazio et al., The Road Less Scheduled, arXiv:2405.15682.
        Oikonomou et al., Taking the Road Less Scheduled with Adaptive Polyak Steps, arXiv:2511.07767.
    """

    #: ``z`` only in a state dict of format 1 (converted on load), or in eval mode after loading one that
    #: kept no y (version 0.1.0 saved in eval mode; converted by ``train()``).
    _tensor_state_keys = ("d", "z", "m", "v", "y")

    def _required_state_keys(self, p: torch.Tensor) -> tuple[str, ...]:
        return ("d", "m", "v", "y") if self._needs_master(p) else ("d", "m", "v")

    def _missing_state_keys(self, p: torch.Tensor, param_state: dict[str, Any]) -> list[str]:
        # format 1 kept z instead of d
        return [key for key in self._required_state_keys(p) if key not in param_state and not
                (key == "d" and "z" in param_state)]  # fmt: skip

    def _allowed_state_keys(self, p: torch.Tensor, train_mode: bool) -> tuple[str, ...]:
        keys = ("d", "z", "m", "v")
        return keys if train_mode and not self._needs_master(p) else (*keys, "y")

    def _upgrade_param_state(self, p: torch.Tensor, param_state: dict[str, Any], train_mode: bool) -> dict[str, Any]:
        """A format-1 entry (``z``) as format 2: d = z - y, with y the saved ``y`` (fp32 master, or the y kept
        in eval mode), else, in train mode, the parameter. In eval mode without a kept y (version 0.1.0) y is
        not known until ``train()`` (the parameter holds x): z stays until then."""
        if "z" not in param_state:
            return param_state
        if "d" in param_state:
            raise ValueError("holds both 'd' and 'z' (a state dict of format 2 keeps only 'd')")
        y = param_state.get("y")
        if y is None and not train_mode:
            return param_state
        z = param_state["z"]
        y = p.detach() if y is None else y
        if D.is_dtensor(z) != D.is_dtensor(y):  # one side sharded, the other this rank's shard
            z, y = D.local(z), D.local(y)
        dtype = self._state_dtype(p)
        out = {key: value for key, value in param_state.items() if key != "z"}
        out["d"] = z.to(dtype) - y.to(device=z.device, dtype=dtype)
        return out

    def _needs_master(self, p: torch.Tensor) -> bool:
        return self._state_dtype(p) != p.dtype

    def _init_state(self, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                d = torch.zeros_like(p.detach(), dtype=self._state_dtype(p))  # x_0 = y_0 = z_0: d_0 = z_0 - y_0 = 0
                state["d"] = d
                self.inner_step.init_state(state, d)  # m_0 = v_0 = 0 (the kernels below are Adam's)
                if self._needs_master(p):
                    state["y"] = p.detach().to(d.dtype, copy=True)  # fp32 master of y for a bf16/fp16 parameter

    def z_values(self) -> dict[torch.Tensor, torch.Tensor]:
        """Each parameter's base iterate z = y + d, in either mode, keyed by the parameter: new tensors in
        the state dtype (the state keeps d = z - y; a parameter without state has z = y = the parameter)."""
        out = {}
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    out[p] = p.detach().clone()
                elif "z" in state:  # eval mode from a format-1 state dict without a kept y
                    out[p] = state["z"].clone()
                else:
                    out[p] = self._y_value(p).to(state["d"].dtype) + state["d"]
        return out

    def _y(self, p: torch.Tensor) -> torch.Tensor:
        """The tensor that holds y in full precision: the param itself, or its fp32 master."""
        state = self.state[p]
        return D.local(state["y"] if "y" in state else p)

    def _path(self, group: dict[str, Any]) -> str:
        # asked several times per group and step: the answer is kept while the flags, the parameter list and
        # the compile state stay the same (the automatic choice sums the list's sizes)
        params = group["params"]
        key = (group["foreach"], group["fused"], id(params), len(params), functional._compile_failed)
        cache = self.__dict__.setdefault("_paths", {})
        path = cache.get(id(group))
        if path is None or path[0] != key:
            path = cache[id(group)] = (key, resolve_path(group["foreach"], group["fused"], params))
        return path[1]

    def _coefficient_spec(self, group: dict[str, Any]) -> tuple[float, float, float, bool] | None:
        # the fused path takes its coefficient rows from the step's scalar schedule (one compiled call)
        if self._path(group) != "fused":
            return None
        beta1, beta2 = group["betas"]
        return beta1, beta2, group["eps"], not (group["decay_1d"] or group["weight_decay"] == 0.0)

    def _group_lr(self, i: int, group: dict[str, Any], device: torch.device) -> Any:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor) or self._path(group) != "fused":
            return super()._group_lr(i, group, device)
        # The compiled schedule takes a float lr as a 0-D tensor (a float would be a constant of the graph,
        # recompiled whenever an LR scheduler changes it); the same tensor while lr stays the same.
        cache = self.__dict__.setdefault("_lr_tensors", {})
        key = (i, float(lr), device)
        if key not in cache:
            if len(cache) > 4 * len(self.param_groups):  # an LR schedule: drop the values of earlier steps
                cache.clear()
            cache[key] = torch.full((), float(lr), dtype=torch.float64, device=device)
        return cache[key]

    def _schedule(self, stats: torch.Tensor, run: tuple, groups: tuple, const: Any) -> dict[str, Any]:
        # the fused path runs the scalar schedule compiled: one call instead of ~100 small ops
        if all(self._path(group) == "fused" for group in self.param_groups):
            return run_compiled_schedule(stats, run, groups, const)
        return super()._schedule(stats, run, groups, const)

    def _group_statistics(self, group: dict[str, Any], params: list[torch.Tensor], world: int):
        # <g, z - x> = <g, d> / β̃_{k-1}, since d = z - y = β̃_{k-1}(z - x) for the β̃ that built y.
        if not params:
            zero = torch.zeros((), dtype=torch.float64)
            return zero, zero
        stateful = [bool(self.state.get(p)) for p in params]
        dots, l1s = tensor_statistics(
            [D.local(p.grad) for p in params],
            [D.local(self.state[p]["d"]) if s else None for p, s in zip(params, stateful)],
            self._path(group),
        )
        scales = [D.contribution_scale(p, world) for p in params]
        if all(scale == 1.0 for scale in scales):  # one process, plain tensors: nothing to weight
            return dots.sum() / group["y_beta"], l1s.sum()
        weights = torch.tensor(scales, dtype=torch.float64, device=dots.device)
        return torch.dot(dots, weights) / group["y_beta"], torch.dot(l1s, weights)

    def _update_group(self, group: dict[str, Any], params: list[torch.Tensor], **s: Any) -> None:
        if self._path(group) == "fused" and params:
            self._defer_fused(group, params, s)
            return
        if group["decay_1d"] or group["weight_decay"] == 0.0 or all(p.ndim >= 2 for p in params):
            self._update_tensors(
                group, params, s, s["weight_decay"], with_idle=True, has_decay=group["weight_decay"] != 0.0
            )
            return
        # decay_1d=False (the robust default): AdamC decay on matrices and embeddings, none on 1-D tensors
        # (norm gains, biases), as the usual two parameter groups would do.
        matrices = [p for p in params if p.ndim >= 2]
        self._update_tensors(group, matrices, s, s["weight_decay"], with_idle=True, has_decay=True)
        self._update_tensors(group, [p for p in params if p.ndim < 2], s, 0.0, with_idle=False, has_decay=False)

    def _update_tensors(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        s: dict[str, Any],
        weight_decay: Any,
        *,
        with_idle: bool,
        has_decay: bool,
    ) -> None:
        beta1, beta2 = group["betas"]
        if not with_idle or len(params) == len(group["params"]):
            idle = []  # every parameter has a gradient (the usual case): no set to build
        else:
            with_grad = set(p for p in group["params"] if p.grad is not None)
            idle = [p for p in self._params_with_state(group) if p not in with_grad]
        beta_prev = group["y_beta"]
        coef = update_coefficients(
            k=s["k"], alpha=s["alpha"], beta=s["beta"], beta_prev=beta_prev, c=s["c"], beta1=beta1, beta2=beta2,
            eps=group["eps"], weight_decay=weight_decay, ok=s["ok"],
        )  # fmt: skip
        idle_weight = None
        if idle and group["sf_beta1_anneal_steps"] > 0:  # β̃ may change: rebuild y (weight 0 on a skip)
            idle_weight = torch.where(s["ok"], 1.0 - s["beta"] / beta_prev, 0.0)
        schedulefree_plus_update(
            [D.local(p) for p in params],
            [D.local(p.grad) for p in params],
            [self._y(p) for p in params],
            [D.local(self.state[p]["d"]) for p in params],
            [D.local(self.state[p]["m"]) for p in params],
            [D.local(self.state[p]["v"]) for p in params],
            idle_ys=[self._y(p) for p in idle],
            idle_ds=[D.local(self.state[p]["d"]) for p in idle],
            idle_params=[D.local(p) for p in idle],
            coef=coef,
            ok=s["gate"],
            has_decay=has_decay,
            idle_weight=idle_weight,
            beta1=beta1,
            beta2=beta2,
            path=self._path(group),
        )

    def _defer_fused(self, group: dict[str, Any], params: list[torch.Tensor], s: dict[str, Any]) -> None:
        """The fused path of ``_update_group``: queue the group's tensors with the coefficient rows that the
        step's scalar schedule computed (``_coefficient_spec``); the one compiled call for every group runs in
        ``_finish_update``.

        With ``decay_1d=False`` the group's 1-D tensors take a second coefficient row, the same as the
        matrices' but for λ = 0, the values the two calls of ``_update_tensors`` would get. The matrices of
        every fused group of one dtype and betas share one compiled call, their 1-D tensors a second.
        """
        beta1, beta2 = group["betas"]
        coef = s["coef"]  # the rows the step's scalar schedule made (_coefficient_spec): one, or two with split
        split = coef.shape[0] == 2  # a second row (λ = 0) for the 1-D tensors
        pending = self.__dict__.setdefault("_pending", [])
        offset = sum(job[1].shape[0] for job in pending)
        has_decay = [group["weight_decay"] != 0.0] + [False] * (coef.shape[0] - 1)
        tensors = []
        state = self.state
        for p in params:
            st = state[p]
            lp = D.local(p)
            ys = st.get("y")
            tensors.append(
                (lp, D.local(p.grad), lp if ys is None else D.local(ys), D.local(st["d"]), D.local(st["m"]),
                 D.local(st["v"]), offset + (1 if split and p.ndim < 2 else 0))
            )  # fmt: skip
        pending.append((tensors, coef, has_decay, (beta1, beta2), s["gate"]))
        if len(params) != len(group["params"]) and group["sf_beta1_anneal_steps"] > 0:
            # tensors without a gradient: their y follows a changed β̃ now, as on the other paths
            self._update_tensors(group, [], s, s["weight_decay"], with_idle=True, has_decay=False)

    def _finish_update(self) -> None:
        pending = self.__dict__.pop("_pending", None)
        if not pending:
            return
        S = torch.cat([job[1] for job in pending]) if len(pending) > 1 else pending[0][1]
        has_decay = [h for job in pending for h in job[2]]
        buckets: dict[Any, list[tuple]] = {}
        for tensors, _, _, betas, _ in pending:
            for t in tensors:
                # matrices and 1-D tensors stay two calls: one graph over all of them made the 15.6M step
                # 2-3% slower (benchmarks/results/step_cpu_fixed_cost_20261129/, batches 1-3)
                buckets.setdefault((t[3].device, t[3].dtype, betas, t[3].dim() < 2), []).append(t)
        gate = pending[0][4]
        for (_, dtype, (beta1, beta2), _), ts in buckets.items():
            P, G, Y, Dd, M, V, R = (list(seq) for seq in zip(*ts))
            G = [g if g.dtype == d.dtype else g.to(d.dtype) for g, d in zip(G, Dd)]
            fused_update_rows(Y, Dd, M, V, G, S.to(dtype), R, gate, has_decay, beta1, beta2)
            for p, y in zip(P, Y):
                if y is not p:
                    p.copy_(y)

    def _init_eval_state(self, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if "y" not in state:
                state["y"] = p.detach().clone()  # the y that eval() keeps aside (x = y = z here)

    def _to_eval(self, group: dict[str, Any]) -> None:
        beta = float(group["y_beta"])
        for p in self._params_with_state(group):
            state = self.state[p]
            if "y" not in state:  # a full-precision parameter: keep its y aside for train() (one copy)
                state["y"] = p.detach().clone()  # (a DTensor parameter gives a DTensor, as d is)
            eval_from_train(D.local(p), D.local(state["y"]), D.local(state["d"]), beta)

    def _to_train(self, group: dict[str, Any]) -> None:
        beta = float(group["y_beta"])
        for p in self._params_with_state(group):
            state = self.state[p]
            if "z" in state:  # eval mode from a state dict of version 0.1.0: z and no kept y, rebuild y
                z = state.pop("z")
                train_from_eval_z(D.local(p), D.local(z), beta)
                state["d"] = z  # z - y, computed in place
                continue
            if "y" not in state:  # an eval-mode checkpoint loaded without its kept y (DCP): y from x and d
                train_from_eval_d(D.local(p), D.local(state["d"]), beta)
                continue
            y = D.local(state.pop("y") if not self._needs_master(p) else state["y"])
            train_from_eval(D.local(p), y, D.local(state["d"]), beta)
