"""``optimizer.stats``: the last step's scalars, kept as device tensors and read back only when asked for.

A step stores its scalars (0-D tensors on the parameters' device) in a :class:`LazyStats`; the first
read of any key moves them all to the host in one transfer (``torch.stack(...).tolist()``) and turns
them into the Python numbers the logging code expects. The warnings that need a host value (a skipped
non-finite step, a loss below ``loss_floor``) are raised then, once per step's stats: a step itself
never waits for the device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["STATUSES", "LazyStats"]

#: What ``stats["status"]`` can be for a step that reached the statistics (the step's code indexes it).
STATUSES = ("ok", "zero_grad", "skipped_nonfinite")
_INT_KEYS = ("k", "num_skipped")


class LazyStats(Mapping):
    """A read-only mapping that computes its values on first access (``build(**data)``), then caches them."""

    def __init__(self, build: Callable[..., dict[str, Any]], **data: Any) -> None:
        self._build: Callable[..., dict[str, Any]] | None = build
        self._data: dict[str, Any] | None = data
        self._values: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        if self._values is None:
            assert self._build is not None and self._data is not None
            self._values = self._build(**self._data)
            self._build = self._data = None
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return f"LazyStats({self._get()!r})"

    def __reduce__(self) -> Any:  # pickled/deep-copied as the plain dict it stands for
        return (dict, (dict(self._get()),))


def to_host(values: list[Any]) -> list[Any]:
    """Every tensor of ``values`` as a Python float, in one device-to-host transfer per device."""
    out = list(values)
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        host = torch.stack([values[i].detach().reshape(()).to(torch.float64) for i in idx]).tolist()
        for i, h in zip(idx, host):
            out[i] = h
    return out


def _host_stats(values: dict[str, Any]) -> dict[str, Any]:
    keys = [key for key in values if key not in ("alphas", "cs", "betas", "status", "skipped")]
    lists = ("alphas", "cs", "betas")
    flat = [values[key] for key in keys] + [v for key in lists for v in values[key]]
    host = to_host(flat)
    out = dict(values)
    for key, h in zip(keys, host):
        out[key] = int(h) if key in _INT_KEYS else h
    rest = host[len(keys) :]
    for key in lists:
        n = len(values[key])
        out[key], rest = rest[:n], rest[n:]
    return out


def _step_stats(
    *, ref: Any, status: Any, k: Any, F: Any, inner: Any, l1: Any, e_hat: Any, alphas: list[Any], cs: list[Any],
    betas: list[Any], lr_max: Any, num_skipped: Any, below_floor: Any,
) -> dict[str, Any]:  # fmt: skip
    n = len(alphas)
    head = [status, k, F, inner, l1, e_hat, lr_max, num_skipped, below_floor]
    host = to_host(head + list(alphas) + list(cs) + list(betas))
    code, k, F, inner, l1, e_hat, lr_max, num_skipped, below = host[: len(head)]
    alphas, cs, betas = host[9 : 9 + n], host[9 + n : 9 + 2 * n], host[9 + 2 * n :]
    status = STATUSES[int(code)]
    opt = ref()
    name = type(opt).__name__ if opt is not None else "ScheduleFreePlus"
    if status != "ok":
        alphas, cs, e_hat = [0.0] * n, [0.0] * n, math.nan
    if status == "skipped_nonfinite":
        what = "loss" if not math.isfinite(F) else "gradient"
        warnings.warn(
            f"{name}: non-finite {what} at step {int(k) + 1} (F={F}, I={inner}, ||g||_1={l1}); step skipped, "
            "nothing was updated (nonfinite='skip'). (Reported when the step's stats are read: the step "
            "itself does not wait for the device.)",
            RuntimeWarning,
            stacklevel=4,
        )
    if status == "ok" and below and opt is not None and not opt._floor_warned:
        opt._floor_warned = True
        floor = opt.param_groups[0]["loss_floor"]
        warnings.warn(
            f"{name}: the loss F={F:.6g} at step {int(k)} is below loss_floor={floor:g}, so the "
            "Polyak step is 0 and nothing is learned while it stays there. loss_floor must be a lower bound "
            "of the loss: set it below the lowest value the loss can take (e.g. a Gaussian negative "
            "log-likelihood can go below 0). This warning is shown once.",
            RuntimeWarning,
            stacklevel=4,
        )
    return {
        "k": int(k),
        "status": status,
        "skipped": status != "ok",
        "alpha": alphas[0],
        "beta": betas[0],
        "c": cs[0],
        "loss": F,
        "inner": inner,
        "l1": l1,
        "e_hat": e_hat,
        "lr_max": lr_max,
        "num_skipped": int(num_skipped),
        "alphas": alphas,
        "cs": cs,
        "betas": betas,
    }
