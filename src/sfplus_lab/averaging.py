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
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .atomic import atomic_dir
from .errors import UserError

if TYPE_CHECKING:
    from . import checkpoint as ckpt_io

__all__ = [
    "MERGE_MODES",
    "Checkpoint",
    "read_checkpoint",
    "merge_checkpoints",
    "ensure_x",
    "evaluate_weights",
    "load_model",
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


# ============================================================================== checkpoints on disk
@dataclass
class Checkpoint:
    """One lab checkpoint as the merge and export commands need it."""

    path: Path
    step: int
    weights: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    config: dict[str, Any] = field(default_factory=dict)


def resolve_checkpoint(path: str | Path, step: int | None = None) -> ckpt_io.Checkpoint:
    """A complete, verified checkpoint from a checkpoint folder, or from a run folder (its newest, or ``step``)."""
    from . import checkpoint as ckpt_io

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.name.startswith("step_"):
        found = ckpt_io.verify(path)
        if found is None:
            raise UserError(
                f"{path} is not a complete checkpoint (no COMPLETE marker, or a file fails its sha256 check)"
            )
        return ckpt_io.Checkpoint(found, path)
    root = path / "checkpoints"
    if not root.is_dir():
        raise UserError(f"{path} is neither a checkpoint folder (step_XXXXXXX) nor a run folder with checkpoints/")
    if step is None:
        latest = ckpt_io.latest_valid(root)
        if latest is None:
            raise UserError(f"{path} has no complete checkpoint")
        return latest
    complete = ckpt_io.list_complete(root)
    for candidate in complete:
        if candidate.step == step and ckpt_io.verify(candidate.path) is not None:
            return candidate
    steps = ", ".join(str(c.step) for c in complete) or "none"
    raise UserError(f"{path} has no complete checkpoint at step {step} (complete ones: {steps})")


def read_checkpoint(path: str | Path, step: int | None = None) -> Checkpoint:
    """Load a lab checkpoint's weights (x), optimizer state and run config from a checkpoint or run folder."""
    from . import checkpoint as ckpt_io

    found = resolve_checkpoint(path, step)
    state = ckpt_io.load(found)
    train_state = state.get("train_state") or {}
    return Checkpoint(found.path, found.step, dict(state["model"]), train_state.get("optimizer"), state["config"])


def _require_safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise UserError("writing safetensors needs the 'safetensors' package: pip install safetensors") from None
    return safetensors.torch


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomically(out: Path, weights: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write model.safetensors and config.json aside and rename the folder into place: complete or absent.

    ``mkdtemp`` makes the folder 0700 and safetensors writes its file 0600; both get the modes the user's
    umask gives every other file (0755 and 0644 under the usual 022), like the run's checkpoints.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty; choose a new --out (nothing was overwritten)")
    st = _require_safetensors()
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    try:
        with atomic_dir(out) as tmp:
            st.save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            mask = _umask()
            for name in ("model.safetensors", "config.json"):
                os.chmod(tmp / name, 0o666 & ~mask)
            os.chmod(tmp, 0o777 & ~mask)
            if out.exists():
                out.rmdir()  # empty, checked above
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None


def load_model(folder: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the lab GPT from a folder ``sfplus export`` or ``sfplus merge`` wrote; returns (model, config)."""
    from .model import GPT, ModelConfig

    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(f"{folder} lacks config.json or model.safetensors (not written by sfplus export/merge?)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model = GPT(ModelConfig(**config["model"]))
    model.load_state_dict(_require_safetensors().load_file(str(weights_path)))
    return model, config


def evaluate_weights(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Validation losses of ``weights`` on the run's own validation text, by the lab's own evaluation code."""
    from .config import RunConfig
    from .data import load_corpus
    from .trainer import Trainer

    cfg = RunConfig.from_dict({k: v for k, v in config.items() if k not in ("merge", "export")})
    data = cfg.data
    corpus = load_corpus(data.paths, tokenizer=data.tokenizer, cache_dir=data.cache_dir, vocab_size=data.vocab_size)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(cfg, corpus, Path(scratch))
        trainer.model.load_state_dict(weights)
        row = trainer.evaluate() or {}
    return {k: v for k, v in row.items() if k.startswith("val_loss")}


def ensure_x(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights at x: as saved when the optimizer was in eval mode (the lab's rule)."""
    groups = (ckpt.optimizer_state or {}).get("param_groups") or []
    if not groups or all(not g.get("train_mode", False) for g in groups):
        return ckpt.weights
    return x_from_train_state(ckpt.weights, ckpt.optimizer_state, _param_names(ckpt))


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


def merge_checkpoints(paths: Sequence[str | Path], mode: str = "uniform") -> tuple[dict[str, torch.Tensor], dict]:
    """The merged x weights of ``paths`` and the config to write with them (the newest run's, plus a record)."""
    if mode not in MERGE_MODES:
        raise UserError(f"unknown --weights {mode!r}; choose one of {', '.join(MERGE_MODES)}")
    ckpts = [read_checkpoint(p) for p in paths]
    models = {json.dumps(c.config.get("model"), sort_keys=True) for c in ckpts}
    if len(models) > 1:
        raise UserError("the checkpoints are of different model shapes (their config.json model sections differ)")
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
            {"path": str(c.path), "step": c.step, "weight_sum": s.get("*", s or None)} for c, s in zip(ckpts, sums)
        ],
        "warnings": merge_warnings(mode, [c.step for c in ckpts], [s.get("*") for s in sums],
                                   len({json.dumps(c.config, sort_keys=True) for c in ckpts}) == 1),
    }
    return merged, {**ckpts[-1].config, "merge": record}


#: A merge of one run's checkpoints whose oldest is before this fraction of the newest's step gets a warning.
SPREAD_WARNING = 0.9


def merge_warnings(mode: str, steps: Sequence[int], weight_sums: Sequence[float | None], one_run: bool) -> list[str]:
    """Why a merge is likely worse than its newest input, as measured in docs/averaging.md ("What merging did").

    On the lab's runs every merge of one run's checkpoints was worse than its last checkpoint, which already
    averages every iterate: a ``window`` most of all (it averages z, the noisy base iterate, over the window:
    +2.1 over the last 36 of 586 steps, +0.10 over the last half), a ``uniform`` or ``online`` merge the more,
    the earlier its oldest checkpoint (+0.04 for steps 350-586 uniformly). ``weight_sums`` holds each
    checkpoint's W when all parameter groups share one (else None).
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
        parser.add_argument("--step", type=int, default=None, help="export this checkpoint step (default: newest)")
    parser.add_argument("--out", required=True, help="folder to write model.safetensors and config.json into")
    parser.add_argument(
        "--eval", action="store_true", help="also print the validation loss of the written weights on the run's data"
    )


def run(name: str, args: argparse.Namespace) -> int:
    out = Path(args.out)
    if name == "merge":
        weights, config = merge_checkpoints(args.checkpoints, args.weights)
        what = f"merged {len(args.checkpoints)} checkpoint(s) ({args.weights})"
        for warning in config["merge"]["warnings"]:
            print(f"sfplus merge: warning: {warning}; check it with --eval", file=sys.stderr)
    else:
        ckpt = read_checkpoint(args.run, args.step)
        weights = ensure_x(ckpt)
        config = {**ckpt.config, "export": {"checkpoint": str(ckpt.path), "step": ckpt.step}}
        what = f"exported the x weights of {ckpt.path}"
    _write_atomically(out, weights, config)
    print(f"{what} -> {out}")
    if args.eval:
        losses = evaluate_weights(config, weights)
        print("  ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    return 0
