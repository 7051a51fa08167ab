"""``sfplus merge`` and ``sfplus export``: checkpoints on disk, merged or exported weights on disk, the command.

The arithmetic (the three merge modes, x from weights saved in train mode, when to warn) is in
``merge_math.py``; docs/averaging.md says why averaging checkpoints is sound and what merging did.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .atomic import atomic_dir
from .errors import UserError
from .merge_math import (
    MERGE_MODES,
    averaging_weights,
    combine,
    merge_coefficients,
    merge_warnings,
    saved_in_eval_mode,
    weights_at_x,
)

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
]


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
    if ckpt.optimizer_state is None or saved_in_eval_mode(ckpt.optimizer_state):
        return ckpt.weights
    return weights_at_x(ckpt.weights, ckpt.optimizer_state, _param_names(ckpt))


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
        return averaging_weights(ckpt.optimizer_state)
    except ValueError:
        pass
    try:
        return averaging_weights(ckpt.optimizer_state, _param_names(ckpt))
    except ValueError as exc:
        raise UserError(f"{ckpt.path}: {exc} (--weights uniform)") from None


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
        raise UserError(f"{exc} (--weights uniform merges without averaging weights)") from None
    record = {
        "mode": mode,
        "checkpoints": [
            {"path": str(c.path), "step": c.step, "weight_sum": s.get("*", s or None)} for c, s in zip(ckpts, sums)
        ],
        "warnings": merge_warnings(mode, [c.step for c in ckpts], [s.get("*") for s in sums],
                                   len({json.dumps(c.config, sort_keys=True) for c in ckpts}) == 1),
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
