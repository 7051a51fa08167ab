"""``sfplus train``: parse flags -> recipe + overrides -> Trainer -> run -> report where everything is.

Every config field has a flag, generated from the config dataclasses (``FLAGS``, ``sfplus_lab.flags``). Flags
default to None so that only the flags a user typed override the recipe (or, with ``--resume``, the run's
saved config). Values are parsed here, not by argparse, so a bad value is one ``UserError`` line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .config import CheckpointConfig, DataConfig, OptimConfig, RunConfig, TrainConfig
from .errors import UserError
from .flags import Flag, flags_for, parse_value
from .model import PRESETS
from .optim_factory import METHODS, PRESET_FIELDS
from .recipes import RECIPES, get_recipe


def _flags() -> dict[str, Flag]:
    """Every flag that sets a config field, generated from the config dataclasses (``flags.flags_for``): the
    field's docstring is the help, its annotation the type, the default recipe's value the default shown."""
    recipe = get_recipe("default")
    optim_defaults = recipe.optim.resolved()
    sections = [
        flags_for(DataConfig, "data", skip=("paths",), defaults=recipe.data,  # paths: --data
                  metavars={"tokenizer": "KIND", "cache_dir": "DIR"}),
        flags_for(OptimConfig, "optim", renames={"name": "--optimizer"}, defaults=optim_defaults,
                  notes={"name": f"--optimizer takes any entry: {', '.join(METHODS)} (a variant is its base "
                         "with its fixed fields; flags typed as well win)."},
                  default_notes={name: "for sfplus, from its preset" for name in PRESET_FIELDS}),
        flags_for(TrainConfig, "train", renames={"model_size": "--model"}, kinds={"tokens": "count"},
                  skip=("compile", "progress"), defaults=recipe.train,  # --compile, --no-progress
                  notes={"model_size": f"One of {', '.join(PRESETS)}.", "tokens": "Takes k, M, G: 300k, 2M."},
                  metavars={"model_size": "SIZE", "device": "DEVICE"}),
        flags_for(CheckpointConfig, "checkpoint", renames={"every": "--checkpoint-every", "keep": "--keep-checkpoints"},
                  defaults=recipe.checkpoint),
    ]
    table: dict[str, Flag] = {}
    for flag in (f for section in sections for f in section):
        if flag.flag in table:
            raise TypeError(f"two config fields map to {flag.flag}: rename one in train._flags")
        table[flag.flag] = flag
    return table


#: flag -> the config field it sets (``flags.Flag``), for every field a flag can set
FLAGS: dict[str, Flag] = _flags()
#: settings a resumed run may change (they do not alter the optimisation path's definition)
RESUME_MAY_CHANGE = {
    "train.eval_every", "train.evals_per_decade", "train.eval_batches", "train.log_every", "train.progress",
    "train.device", "train.compile", "train.max_consecutive_skips", "checkpoint.every", "checkpoint.keep",
    "data.cache_dir",
}
#: exit codes of a run stopped early (checkpoint saved): the shell's 128 + signal number
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
EPILOG = (
    f"exit status: 0 when the run reached its budget; {EXIT_SIGINT} after Ctrl-C (SIGINT) and {EXIT_SIGTERM} after "
    "SIGTERM, once a checkpoint is saved at the next step boundary (continue with the same command plus --resume), "
    f"so 'sfplus train ... && sfplus export ...' never exports a partial run; 2 for a usage or input error."
)
#: files a run writes into its folder; --force deletes only these, never anything else a user keeps there
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.jsonl.tmp", "loss.png", "step_size.png", "checkpoints")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--data", nargs="+", metavar="PATH", help="text files or folders (default: built-in text)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default: runs/<recipe>-<UTC time>)")
    for flag in FLAGS.values():
        parser.add_argument(flag.flag, metavar=flag.metavar, help=flag.help)
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (GPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--recipe", metavar="NAME", help=f"named run to start from: {', '.join(RECIPES)}")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--force", action="store_true", help="replace the run files already in --out")


def apply_flags(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The config with every flag the user typed applied (each section re-validated)."""
    changes: dict[str, dict[str, Any]] = {"data": {}, "optim": {}, "train": {}, "checkpoint": {}}
    for flag in FLAGS.values():
        text = getattr(args, flag.dest)
        if text is not None:
            changes[flag.section][flag.field] = parse_value(flag.flag, flag.kind, text)
    if "name" in changes["optim"]:
        _apply_method(changes["optim"])
    if "preset" in changes["optim"]:
        # A preset on the command line means "these defaults": drop the recipe's own ScheduleFree+ values
        # (the quickstart's LAB_V1) unless a flag set them too.
        for name in PRESET_FIELDS:
            changes["optim"].setdefault(name, None)
    if "tokens" in changes["train"]:
        changes["train"].setdefault("tokens_per_param", None)
    elif "tokens_per_param" in changes["train"]:
        changes["train"]["tokens"] = None
    if args.data is not None:
        changes["data"]["paths"] = [str(Path(p).resolve()) if Path(p).exists() else p for p in args.data]
    if args.compile:
        changes["train"]["compile"] = True
    if args.no_progress:
        changes["train"]["progress"] = False
    sections = {name: replace(getattr(cfg, name), **kw) for name, kw in changes.items() if kw}
    if "model_size" in changes["train"] or "seq_len" in changes["data"]:
        sections["model"] = None  # re-resolved from the new size (resume then reports the mismatch)
    return replace(cfg, **sections)


def _apply_method(optim: dict[str, Any]) -> None:
    """``--optimizer NAME``: a registry entry; a variant becomes its base with its fixed fields (flags win)."""
    method = METHODS.get(optim["name"])
    if method is None:
        raise UserError(f"unknown optimizer {optim['name']!r}; choose one of {', '.join(METHODS)}")
    optim["name"] = method.base or method.name
    for key, value in method.config.items():
        optim.setdefault(key, value)


def _check_resume(saved: RunConfig, now: RunConfig, out: Path) -> None:
    before, after = _flatten(saved.to_dict()), _flatten(now.to_dict())
    allowed = set(RESUME_MAY_CHANGE)
    if METHODS[saved.optim.name].kind == "anytime":  # schedule-free: the run may be extended or shortened
        allowed |= {"train.tokens", "train.tokens_per_param"}
    diffs = [f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
             if before.get(k) != after.get(k) and k not in allowed and not k.startswith("model.")]
    if diffs:
        raise UserError(f"cannot --resume {out} with different settings: {'; '.join(diffs)}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def prepare_run_dir(out: Path, *, force: bool) -> None:
    """Create ``out`` for a new run; an existing non-empty folder needs --force, which removes only run files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError(
                f"run folder {out} already exists; pass --resume to continue it, --force to replace its run "
                "files, or choose another --out"
            )
        for name in RUN_FILES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None


def write_config(out: Path, cfg: RunConfig) -> None:
    write_atomic(out / "config.json", cfg.to_json())


def run(name: str, args: argparse.Namespace) -> int:
    """Train; under torchrun every rank runs this and rank 0 alone writes files and prints (docs/scaling.md)."""
    from . import distributed as dist_lab

    if args.resume and args.force:
        raise UserError("--resume and --force contradict each other: pick one")
    out = Path(args.out or f"runs/{args.recipe or 'default'}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    cfg, new_run = _resolve_config(args, out)
    ctx = dist_lab.init(None if cfg.train.device == "auto" else cfg.train.device)
    clean = False
    try:
        code = _train(args, cfg, out, new_run, ctx)
        clean = True
        return code
    finally:
        dist_lab.shutdown(ctx, clean=clean)  # after _train returned: the DDP model is already released


def _resolve_config(args: argparse.Namespace, out: Path) -> tuple[RunConfig, bool]:
    """The run's config (recipe + flags, or the saved config + flags with --resume) and whether the run is new."""
    saved_path = out / "config.json"
    if args.resume and saved_path.exists():
        if args.recipe is not None:
            raise UserError("--recipe cannot be combined with --resume: the run's saved config is used")
        saved = RunConfig.from_dict(json.loads(saved_path.read_text()))
        cfg = apply_flags(saved, args)
        _check_resume(saved, cfg, out)
        return cfg, False
    return apply_flags(get_recipe(args.recipe or "default"), args), True


def _train(args: argparse.Namespace, cfg: RunConfig, out: Path, new_run: bool, ctx: Any) -> int:
    from . import distributed as dist_lab
    from .trainer import Trainer

    if new_run and ctx.is_main:
        prepare_run_dir(out, force=args.force)
    if ctx.is_main:  # rank 0 builds the token cache first; the other ranks then read it
        corpus = _load_corpus(cfg)
    dist_lab.barrier(ctx)
    if not ctx.is_main:
        corpus = _load_corpus(cfg)
    trainer = Trainer(cfg, corpus, out, dist_ctx=ctx)
    if args.resume and cfg.model is not None and trainer.cfg.model != cfg.model:
        raise UserError(f"cannot --resume {out}: the data now gives a different vocabulary or model shape")
    if ctx.is_main:
        write_config(out, trainer.cfg)
    ckpt = trainer.resume_from(out / "checkpoints") if args.resume else None
    if ctx.is_main:
        print(_banner(trainer, ckpt))
    result = trainer.run(resumed=ckpt is not None)
    if ctx.is_main:
        print(_summary(trainer, result))
    return exit_code(result)


def exit_code(result: Any) -> int:
    """0 for a finished run; 130 when Ctrl-C stopped it, 143 for SIGTERM or any other early stop."""
    if not result.stopped_early:
        return 0
    return EXIT_SIGINT if result.stop_signal == signal.SIGINT else EXIT_SIGTERM


def _load_corpus(cfg: RunConfig) -> Any:
    from .data import load_corpus

    return load_corpus(
        cfg.data.paths, tokenizer=cfg.data.tokenizer, cache_dir=cfg.data.cache_dir, vocab_size=cfg.data.vocab_size
    )


def _banner(trainer: Any, ckpt: Any) -> str:
    cfg = trainer.cfg
    where = f"resuming from step {ckpt.step}" if ckpt is not None else "new run"
    return (
        f"sfplus train: {where} in {trainer.run_dir}: {cfg.train.model_size} GPT ({trainer.model.num_params():,} "
        f"params), {cfg.optim.name}, {trainer.total_steps} steps x {trainer.tokens_per_step:,} tokens, "
        f"data {trainer.corpus.name} ({len(trainer.corpus.train):,} train tokens), device {trainer.device}"
    )


def _summary(trainer: Any, result: Any) -> str:
    out = result.run_dir
    lines = []
    if result.stopped_early:
        why = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}.get(result.stop_signal, "SIGTERM or Ctrl-C")
        lines.append(f"stopped at step {result.step}/{result.total_steps} ({why}); checkpoint saved; "
                     f"continue with the same command plus --resume (exit status {exit_code(result)})")
    else:
        lines.append(f"done: {result.step} steps, {result.step * trainer.tokens_per_step:,} tokens, "
                     f"{trainer.elapsed_s:.0f} s of training")
    lines.append(f"  metrics: {out / 'metrics.jsonl'}")
    lines.append(f"  plots:   {out / 'loss.png'}, {out / 'step_size.png'}")
    evals = [r for r in trainer.metrics.rows if r.get("kind") == "eval"]
    if evals:
        last = evals[-1]
        parts = ", ".join(f"{k[len('val_loss/'):]} {v:.4f}" for k, v in last.items() if k.startswith("val_loss/"))
        which = "final" if last["step"] == result.total_steps else "last"
        lines.append(f"  {which} validation loss at x (step {last['step']}): {last['val_loss']:.4f} ({parts})")
    return "\n".join(lines)
