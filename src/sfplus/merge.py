"""Merging ScheduleFree+ checkpoints, and what a saved optimizer state says about its averaging.

Why averaging checkpoints is sound: ScheduleFree+'s x is an online-to-batch conversion of the base iterates
z, x_k = Σ_{i≤k} w_i z_i / W_k (docs/algorithm.md, "One step", eqs. 8-9), and any weighted average of
iterates carries the same guarantee. A checkpoint saved in eval mode holds x_k (the model's weights) and
W_k (:func:`averaging_weights` of the optimizer's ``state_dict()``), so three merges are available:

- ``"uniform"``: the mean of the checkpoints' x. Works for any checkpoints of one model shape.
- ``"online"``: x weighted by W, Σ_j W_j x_j / Σ_j W_j. For checkpoints of *different* runs (or branches
  from a common checkpoint) it is the online-to-batch average of all their iterates together.
- ``"window"``: for checkpoints of *one* run at steps k_1 < k_n, the average of z over (k_1, k_n] only:
  (W_n x_n − W_1 x_1) / (W_n − W_1). It drops the early iterates from the average after the fact, and
  needs only the first and last checkpoint.

>>> x = sfplus.merge.weights_at_x(model.state_dict(), opt.state_dict(), names)   # x, in either mode
>>> merged = sfplus.merge_checkpoints([x_a, x_b], "online", [opt_a.state_dict(), opt_b.state_dict()])

All arithmetic is in float64 and cast back to each tensor's dtype at the end. Only the public state-dict
layout of ``ScheduleFreePlus`` / ``ScheduleFreePlusReference`` is read here, through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "MERGE_MODES",
    "averaging_weights",
    "combine",
    "merge_checkpoints",
    "merge_coefficients",
    "saved_in_eval_mode",
    "weights_at_x",
]

MERGE_MODES = ("uniform", "online", "window")

Coefficients = Mapping[str, float]


# ---------------------------------------------------------------------------------------------- reading a state
def saved_in_eval_mode(optimizer_state: Mapping[str, Any]) -> bool:
    """Whether a ScheduleFree+ ``state_dict()`` was taken in eval mode (the model's weights then hold x).

    True too for a state without groups, or one that records no mode (not a ScheduleFree+ state: its
    weights are taken as they are).
    """
    groups = optimizer_state.get("param_groups") or []
    return not groups or all(not group.get("train_mode", False) for group in groups)


def averaging_weights(optimizer_state: Mapping[str, Any], param_names: Sequence[str] | None = None) -> dict[str, float]:
    """W, the sum of the averaging weights so far, of each parameter of a ScheduleFree+ ``state_dict()``.

    ``{"*": W}`` when every parameter group has the same W (one ``lr`` for all); otherwise W by parameter
    name, which needs the names: a group's ``param_names`` (torch.optim records them when the optimizer was
    given ``(name, tensor)`` pairs), else ``param_names``, the parameter names in the optimizer's index order
    (its groups' ``params`` concatenated). W is 0 during the warm start (``c_warmup``), before averaging
    begins. Raises ``ValueError`` for a state that is not ScheduleFree+'s, or when names are needed and
    missing.
    """
    groups = optimizer_state.get("param_groups") or []
    if not groups or any("weight_sum" not in g for g in groups):
        raise ValueError("the optimizer state has no ScheduleFree+ weight_sum (not a ScheduleFree+ checkpoint?)")
    sums = {float(g["weight_sum"]) for g in groups}
    if len(sums) == 1:
        return {"*": sums.pop()}
    by_name: dict[str, float] = {}
    for group in groups:
        names = group.get("param_names")
        if names is None:
            if param_names is None:
                raise ValueError(
                    "parameter groups carry different weight_sum values and the checkpoint does not name its "
                    "parameters; pass param_names, or merge uniformly"
                )
            names = [param_names[i] for i in group["params"]]
        for name in names:
            by_name[name] = float(group["weight_sum"])
    return by_name


def weights_at_x(
    weights: Mapping[str, torch.Tensor], optimizer_state: Mapping[str, Any], param_names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The model's weights at x, from weights saved with ``optimizer_state`` in either mode.

    Saved in eval mode (:func:`saved_in_eval_mode`): ``weights`` already hold x, returned as they are (a
    new dict). Saved in train mode, they hold y: x = (y − (1−β̃)z)/β̃ per parameter (from the fast class's
    d = z − y: x = y + (1 − 1/β̃)d; from a format-1 dict's z), or the reference class's stored x (in
    float64, cast back; y from the fp32 master where the fast class keeps one).
    ``param_names`` maps the optimizer's parameter indices to names in ``weights``; names the optimizer
    does not hold (buffers) are copied.
    """
    out = dict(weights)
    if saved_in_eval_mode(optimizer_state):
        return out
    state = optimizer_state.get("state", {})
    for group in optimizer_state["param_groups"]:
        beta = float(group["y_beta"])
        for index in group["params"]:
            name = param_names[index]
            entry = state.get(index) or state.get(str(index))
            if not entry:
                continue  # never stepped: x = y = z = the initial value
            if "x" in entry:
                x = entry["x"].to(torch.float64)
            else:
                y = (entry["y"] if "y" in entry else weights[name]).detach().to(torch.float64)
                if "d" in entry:  # state format 2: d = z - y
                    x = y + (1.0 - 1.0 / beta) * entry["d"].to(torch.float64)
                else:  # format 1 kept z
                    x = torch.lerp(y, entry["z"].to(torch.float64), 1.0 - 1.0 / beta)
            out[name] = x.to(weights[name].dtype)
    return out


# ---------------------------------------------------------------------------------------------- the arithmetic
def combine(states: Sequence[Mapping[str, torch.Tensor]], coefficients: Sequence[Coefficients | float]) -> dict:
    """Σ_j coef_j[name] · states[j][name] for every floating tensor, in float64, cast back to its dtype.

    A coefficient may be one float for the whole checkpoint or a per-name mapping (names it lacks take its
    ``"*"`` entry). Non-floating tensors (counters, masks) must agree across checkpoints and are copied from
    the last one. Every checkpoint must hold the same names and shapes. The result is on the CPU.
    """
    if not states or len(states) != len(coefficients):
        raise ValueError(f"need one coefficient per checkpoint: {len(states)} checkpoints, {len(coefficients)}")
    names = list(states[-1].keys())
    for j, state in enumerate(states):
        if set(state.keys()) != set(names):
            missing = sorted(set(names) - set(state.keys()))[:3]
            extra = sorted(set(state.keys()) - set(names))[:3]
            raise ValueError(f"checkpoint {j} holds different tensors (missing {missing}, extra {extra})")
    merged = {}
    for name in names:
        last = states[-1][name]
        for j, state in enumerate(states):
            if tuple(state[name].shape) != tuple(last.shape):
                raise ValueError(
                    f"tensor {name!r} has shape {tuple(state[name].shape)} in checkpoint {j} "
                    f"but {tuple(last.shape)} in the last one"
                )
        if not last.is_floating_point():
            if any(not torch.equal(state[name], last) for state in states):
                raise ValueError(f"non-float tensor {name!r} differs between checkpoints; cannot average it")
            merged[name] = last.clone()
            continue
        total = torch.zeros(last.shape, dtype=torch.float64)
        for state, coef in zip(states, coefficients):
            scale = _coefficient(coef, name)
            if scale != 0.0:
                total += scale * state[name].detach().to("cpu", torch.float64)
        merged[name] = total.to(last.dtype)
    return merged


def _coefficient(coef: Coefficients | float, name: str) -> float:
    if isinstance(coef, Mapping):
        return float(coef[name] if name in coef else coef["*"])
    return float(coef)


def merge_coefficients(
    mode: str, weight_sums: Sequence[Coefficients], names: Sequence[str], steps: Sequence[int] | None = None
) -> list[dict[str, float]]:
    """Per-checkpoint, per-name coefficients for ``mode``; ``weight_sums[j]`` maps names to W of checkpoint j
    (:func:`averaging_weights`; ignored by ``"uniform"``).

    Names absent from ``weight_sums`` (buffers, parameters the optimizer never saw) use the ``"*"`` entry
    when given, else the checkpoint's uniform weight (``"online"``) or the newest checkpoint (``"window"``);
    every coefficient set sums to 1 per name, so a tensor equal in all checkpoints (a constant buffer) is
    left unchanged. ``steps``, when given, must increase for ``"window"``.
    """
    n = len(weight_sums)
    if mode not in MERGE_MODES:
        raise ValueError(f"unknown merge mode {mode!r}; choose one of {', '.join(MERGE_MODES)}")
    if n == 0:
        raise ValueError("no checkpoints to merge")
    if mode == "uniform":
        return [{name: 1.0 / n for name in names} for _ in range(n)]
    if mode == "online":
        return _online(weight_sums, names)
    return _window(weight_sums, names, steps)


def _w(weight_sums: Coefficients, name: str) -> float | None:
    if name in weight_sums:
        return float(weight_sums[name])
    return float(weight_sums["*"]) if "*" in weight_sums else None


def _online(weight_sums: Sequence[Coefficients], names: Sequence[str]) -> list[dict[str, float]]:
    n = len(weight_sums)
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for name in names:
        ws = [_w(w, name) for w in weight_sums]
        if any(w is None for w in ws):
            ws = [1.0] * n  # not an optimizer parameter: a plain mean
        total = sum(ws)
        if total <= 0.0:
            raise ValueError(
                f"online merge: every checkpoint has weight_sum 0 for {name!r} (all saved during the warm start "
                "c_warmup, before averaging begins); merge uniformly"
            )
        for j, w in enumerate(ws):
            out[j][name] = w / total
    return out


def _window(
    weight_sums: Sequence[Coefficients], names: Sequence[str], steps: Sequence[int] | None
) -> list[dict[str, float]]:
    n = len(weight_sums)
    if n < 2:
        raise ValueError("window merge needs at least two checkpoints of one run (the window's two ends)")
    if steps is not None and list(steps) != sorted(set(steps)):
        raise ValueError(f"window merge needs checkpoints of one run in increasing step order, got steps {steps}")
    out: list[dict[str, float]] = [{name: 0.0 for name in names} for _ in range(n)]
    for name in names:
        w_first, w_last = _w(weight_sums[0], name), _w(weight_sums[-1], name)
        if w_first is None or w_last is None:
            out[-1][name] = 1.0  # not averaged by the optimizer: take the newest
            continue
        if not w_last > w_first:
            raise ValueError(
                f"window merge: weight_sum of {name!r} does not grow between the first and last checkpoint "
                f"({w_first} -> {w_last}); are they from one run, oldest first?"
            )
        out[0][name] = -w_first / (w_last - w_first)
        out[-1][name] = w_last / (w_last - w_first)
    return out


def merge_checkpoints(
    weights: Sequence[Mapping[str, torch.Tensor]],
    mode: str = "uniform",
    optimizer_states: Sequence[Mapping[str, Any]] | None = None,
    *,
    param_names: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Merge checkpoints' weights (each a model ``state_dict()`` saved with ScheduleFree+ in eval mode: x).

    ``optimizer_states`` (each checkpoint's ``optimizer.state_dict()``) give W for ``"online"`` and
    ``"window"``, and let weights saved in train mode be turned into x first (that needs ``param_names``,
    the parameter names in the optimizer's index order; so do groups with different W unless their state
    names its parameters). ``steps`` (each checkpoint's step) lets ``"window"`` check their order.
    Returns the merged weights on the CPU, each tensor in its dtype.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"unknown merge mode {mode!r}; choose one of {', '.join(MERGE_MODES)}")
    if optimizer_states is None:
        if mode != "uniform":
            raise ValueError(f"a {mode} merge needs each checkpoint's optimizer state (its averaging weights W)")
        states = list(weights)
        sums: list[Coefficients] = [{} for _ in states]
    else:
        if len(optimizer_states) != len(weights):
            raise ValueError(f"{len(weights)} checkpoints but {len(optimizer_states)} optimizer states")
        states = []
        for w, opt_state in zip(weights, optimizer_states):
            if not saved_in_eval_mode(opt_state) and param_names is None:
                raise ValueError("weights saved in train mode hold y: pass param_names to recover x")
            states.append(weights_at_x(w, opt_state, param_names or []))
        if mode == "uniform":
            sums = [{} for _ in states]
        else:
            sums = [averaging_weights(s, param_names) for s in optimizer_states]
    if not states:
        raise ValueError("no checkpoints to merge")
    return combine(states, merge_coefficients(mode, sums, list(states[-1]), steps=steps))
