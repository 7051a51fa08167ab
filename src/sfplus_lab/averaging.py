"""``sfplus merge`` and ``sfplus export``: averaging checkpoints, and shipping a run's x weights.

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

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

__all__ = [
    "MERGE_MODES",
    "Checkpoint",
    "read_checkpoint",
    "merge_checkpoints",
    "ensure_x",
    "combine",
    "merge_coefficients",
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


# ============================================================================== checkpoints on disk
_WEIGHT_FILES = ("model.safetensors", "model.pt")
_OPTIMIZER_FILES = ("optimizer.pt",)
_BUNDLE_FILES = ("checkpoint.pt", "state.pt")


@dataclass
class Checkpoint:
    """One lab checkpoint as the merge and export commands need it."""

    path: Path
    step: int
    weights: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    config: dict[str, Any] = field(default_factory=dict)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which
        raise UserError(f"cannot read {path}: {exc}") from None


def _step_of(path: Path) -> int | None:
    name = path.name
    if name.startswith("step_") and name[5:].isdigit():
        return int(name[5:])
    return None


def _complete_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None and (p / "COMPLETE").exists()]
    return sorted(found, key=lambda p: _step_of(p) or 0)


def resolve_checkpoint(path: str | Path, step: int | None = None) -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder (its latest complete checkpoint, or ``step``)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if _step_of(path) is not None:
        if not (path / "COMPLETE").exists():
            raise UserError(f"{path} is not a complete checkpoint (no COMPLETE marker: the save was interrupted)")
        return path
    found = _complete_checkpoints(path)
    if not found:
        raise UserError(f"{path} is neither a checkpoint folder nor a run folder with complete checkpoints")
    if step is None:
        return found[-1]
    for candidate in found:
        if _step_of(candidate) == step:
            return candidate
    steps = ", ".join(str(_step_of(p)) for p in found)
    raise UserError(f"{path} has no complete checkpoint at step {step} (it has: {steps})")


def _run_config(ckpt_dir: Path) -> dict[str, Any]:
    for candidate in (ckpt_dir / "config.json", ckpt_dir.parent.parent / "config.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise UserError(f"{candidate} is not valid JSON: {exc}") from None
    return {}


def read_checkpoint(path: str | Path, step: int | None = None) -> Checkpoint:
    """Load a lab checkpoint's weights (x) and optimizer state from a checkpoint or run folder."""
    ckpt = resolve_checkpoint(path, step)
    weights = optimizer_state = None
    for name in _BUNDLE_FILES:
        if (ckpt / name).is_file():
            bundle = _torch_load(ckpt / name)
            weights, optimizer_state = bundle.get("model"), bundle.get("optimizer")
    for name in _WEIGHT_FILES:
        if weights is None and (ckpt / name).is_file():
            weights = _load_weights(ckpt / name)
    for name in _OPTIMIZER_FILES:
        if optimizer_state is None and (ckpt / name).is_file():
            optimizer_state = _torch_load(ckpt / name)
    if weights is None:
        raise UserError(f"{ckpt} holds no model weights ({', '.join(_WEIGHT_FILES + _BUNDLE_FILES)})")
    return Checkpoint(ckpt, _step_of(ckpt) or 0, dict(weights), optimizer_state, _run_config(ckpt))


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return _torch_load(path)


def _require_safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise UserError("writing safetensors needs the 'safetensors' package: pip install safetensors") from None
    return safetensors.torch


def _write_atomically(out: Path, files: dict[str, Any]) -> None:
    """Write the folder aside and rename it into place, so ``out`` is either complete or absent."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty; choose a new --out (nothing was overwritten)")
    st = _require_safetensors()
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise UserError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    try:
        for name, content in files.items():
            target = tmp / name
            if name.endswith(".safetensors"):
                st.save_file({k: v.contiguous() for k, v in content.items()}, str(target))
            else:
                target.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            with open(target, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_x(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights at x: as saved when the optimizer was in eval mode (the lab's rule)."""
    state = ckpt.optimizer_state
    groups = (state or {}).get("param_groups") or []
    if not groups or all(not g.get("train_mode", False) for g in groups):
        return ckpt.weights
    names = _param_names(ckpt)
    return x_from_train_state(ckpt.weights, state, names)


def _param_names(ckpt: Checkpoint) -> list[str]:
    """Parameter names in the optimizer's index order, rebuilt from the run's model config."""
    from .model import GPT, ModelConfig
    from .optim_factory import param_groups

    model_cfg = ckpt.config.get("model")
    if not isinstance(model_cfg, dict):
        raise UserError(f"{ckpt.path}: the run's config.json has no model section to name the parameters")
    with torch.device("meta"):
        model = GPT(ModelConfig(**model_cfg))
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in param_groups(model, 0.0) for p in group["params"]]


def _weight_sums(ckpt: Checkpoint) -> dict[str, float]:
    if ckpt.optimizer_state is None:
        raise UserError(f"{ckpt.path} has no optimizer state, so no averaging weights: use --weights uniform")
    try:
        return weight_sums_by_name(ckpt.optimizer_state)
    except ValueError:
        pass
    try:
        return weight_sums_by_name(ckpt.optimizer_state, _param_names(ckpt))
    except ValueError as exc:
        raise UserError(f"{ckpt.path}: {exc}") from None


def merge_checkpoints(paths: list[str | Path], mode: str = "uniform") -> tuple[dict[str, torch.Tensor], dict]:
    """The merged x weights of ``paths`` and a JSON-able record of how they were made."""
    if mode not in MERGE_MODES:
        raise UserError(f"unknown --weights {mode!r}; choose one of {', '.join(MERGE_MODES)}")
    ckpts = [read_checkpoint(p) for p in paths]
    states = [ensure_x(c) for c in ckpts]
    sums = [_weight_sums(c) for c in ckpts] if mode != "uniform" else [{} for _ in ckpts]
    try:
        coefficients = merge_coefficients(mode, sums, list(states[-1]), steps=[c.step for c in ckpts])
        merged = combine(states, coefficients)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    record = {
        "mode": mode,
        "checkpoints": [
            {"path": str(c.path), "step": c.step, "weight_sum": s.get("*") if "*" in s else s or None}
            for c, s in zip(ckpts, sums)
        ],
    }
    return merged, {**ckpts[-1].config, "merge": record}


# ============================================================================== command line
def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "merge":
        parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint folders, or run folders")
        parser.add_argument(
            "--weights", choices=MERGE_MODES, default="uniform",
            help="uniform: mean of x; online: weighted by the optimizer's W (different runs); "
            "window: average of z between the first and last checkpoint of one run",
        )  # fmt: skip
    else:
        parser.add_argument("run", metavar="RUN", help="a run folder (or one of its checkpoint folders)")
        parser.add_argument("--step", type=int, default=None, help="export this checkpoint step (default: latest)")
    parser.add_argument("--out", required=True, help="folder to write model.safetensors and config.json into")


def run(name: str, args: argparse.Namespace) -> int:
    out = Path(args.out)
    if name == "merge":
        merged, config = merge_checkpoints(args.checkpoints, args.weights)
        _write_atomically(out, {"model.safetensors": merged, "config.json": config})
        print(f"merged {len(args.checkpoints)} checkpoint(s) ({args.weights}) into {out}")
        return 0
    ckpt = read_checkpoint(args.run, args.step)
    config = {**ckpt.config, "export": {"checkpoint": str(ckpt.path), "step": ckpt.step}}
    _write_atomically(out, {"model.safetensors": ensure_x(ckpt), "config.json": config})
    print(f"exported the x weights of {ckpt.path} (step {ckpt.step}) to {out}")
    return 0
