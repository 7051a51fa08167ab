"""The arithmetic of merging ScheduleFree+ checkpoints: coefficients, the weighted sum, x from y.

Why averaging checkpoints is sound (docs/averaging.md): ScheduleFree+'s x is an online-to-batch
conversion of the base iterates z, x_k = Σ_{i≤k} w_i z_i / W_k, and any weighted average of iterates
carries the same guarantee. Every checkpoint records x_k (the weights, saved in eval mode) and W_k (the
optimizer's ``weight_sum`` per parameter group), so three merges are available:

- ``uniform``: the mean of the checkpoints' x. Works for any checkpoints of one model shape.
- ``online``: x weighted by W, Σ_j W_j x_j / Σ_j W_j. For checkpoints of *different* runs (or branches
  from a common checkpoint) it is the online-to-batch average of all their iterates together.
- ``window``: for checkpoints of *one* run at steps k_1 < k_n, the average of z over (k_1, k_n] only:
  (W_n x_n − W_1 x_1) / (W_n − W_1). It drops the early iterates from the average after the fact
  (what "restarting the average" would have given), and needs only the first and last checkpoint.

All arithmetic is in float64 and cast back to each tensor's dtype at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "MERGE_MODES",
    "SPREAD_WARNING",
    "combine",
    "merge_coefficients",
    "merge_warnings",
    "weight_sums_by_name",
    "x_from_train_state",
]

MERGE_MODES = ("uniform", "online", "window")

Coefficients = Mapping[str, float]


def combine(states: Sequence[Mapping[str, torch.Tensor]], coefficients: Sequence[Coefficients | float]) -> dict:
    """Σ_j coef_j[name] · states[j][name] for every floating tensor, in float64, cast back to its dtype.

    A coefficient may be one float for the whole checkpoint or a per-name mapping (names it lacks get
    ``default`` = its entry under ``"*"``). Non-floating tensors (counters, masks) must agree across
    checkpoints and are copied from the last one. Every checkpoint must hold the same names and shapes.
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
    """Per-checkpoint, per-name coefficients for ``mode``; ``weight_sums[j]`` maps names to W of checkpoint j.

    Names absent from ``weight_sums`` (buffers, parameters the optimizer never saw) use the ``"*"`` entry
    when given, else the checkpoint's uniform weight; every coefficient set sums to 1 per name, so a
    tensor equal in all checkpoints (a constant buffer) is left unchanged.
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
                "c_warmup, before averaging begins); use --weights uniform"
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


def weight_sums_by_name(optimizer_state: Mapping, param_names: Sequence[str] | None = None) -> dict[str, float]:
    """W of each parameter from a ScheduleFree+ ``state_dict()``, by name (``"*"`` when all groups agree).

    ``param_names`` lists the parameter names in the optimizer's index order (its groups' ``params``
    concatenated); it is needed only when groups carry different W (different ``lr`` multipliers).
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
                    "parameters; use --weights uniform"
                )
            names = [param_names[i] for i in group["params"]]
        for name in names:
            by_name[name] = float(group["weight_sum"])
    return by_name


def x_from_train_state(
    weights: Mapping[str, torch.Tensor], optimizer_state: Mapping, param_names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The x weights from weights saved in *train* mode (they hold y): x = (y − (1−β̃)z)/β̃ per parameter.

    Checkpoints of the lab are saved in eval mode and need none of this; it rescues one saved otherwise.
    ``param_names`` maps the optimizer's parameter indices to names in ``weights``.
    """
    out = dict(weights)
    state = optimizer_state.get("state", {})
    for group in optimizer_state["param_groups"]:
        beta = float(group["y_beta"])
        for index in group["params"]:
            name = param_names[index]
            entry = state.get(index) or state.get(str(index))
            if not entry:
                continue  # never stepped: x = y = z = the initial value
            y = weights[name].detach().to(torch.float64)
            if "x" in entry:
                x = entry["x"].to(torch.float64)
            else:
                x = torch.lerp(y, entry["z"].to(torch.float64), 1.0 - 1.0 / beta)
            out[name] = x.to(weights[name].dtype)
    return out


#: A merge of one run's checkpoints whose oldest is before this fraction of the newest's step gets a warning.
SPREAD_WARNING = 0.9


def merge_warnings(mode: str, steps: Sequence[int], weight_sums: Sequence[float | None], one_run: bool) -> list[str]:
    """Why a merge is likely worse than its newest input (measured in docs/averaging.md, "What merging did").

    A warning for a ``window`` merge that starts after the warm start (it averages z, the noisy base iterate,
    over the window only), and for other merges of one run whose oldest checkpoint is before
    ``SPREAD_WARNING`` of the newest's step. ``weight_sums`` holds each checkpoint's W when all parameter
    groups share one (else None).
    """
    out: list[str] = []
    if mode == "window" and len(steps) >= 2:
        w_first, w_last = weight_sums[0], weight_sums[-1]
        if w_first is None or w_last is None or w_first > 0:
            share = "" if not w_last or w_first is None else f", {1 - w_first / w_last:.0%} of the averaging weight"
            out.append(
                f"a window merge averages the base iterate z over steps {steps[0]}-{steps[-1]} only{share}; it was "
                "worse than the last checkpoint in every measured case (much worse for a window of few steps); "
                "the last checkpoint alone already averages the whole run (docs/averaging.md)"
            )
    elif one_run and len(set(steps)) > 1 and min(steps) < SPREAD_WARNING * max(steps):
        out.append(
            f"these checkpoints of one run span steps {min(steps)}-{max(steps)}: averaging checkpoints far apart "
            f"(the oldest before {SPREAD_WARNING:.0%} of the newest's step) was worse than the newest checkpoint "
            "alone in every measured case, which already averages the whole run (docs/averaging.md)"
        )
    return out
