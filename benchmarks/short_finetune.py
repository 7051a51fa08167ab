"""Short fine-tunes: a pretrained lab GPT trained on new text for a few hundred steps, ScheduleFree+ against AdamW.

The library's defaults are chosen on pretraining runs of thousands of steps. A fine-tune is short, starts from
a trained model (a low loss, small gradients) and is where a long warmup costs the most. This script checks
the defaults there, for each seed:

1. pretrain the lab's GPT of ``--model`` on ``--pretrain-data`` for ``--pretrain-tokens`` with the library's
   default ScheduleFree+ (the lab's trainer, as ``sfplus train``), and keep its weights at x;
2. from those weights, train on ``--finetune-data`` for each of ``--steps`` with a fresh optimizer of each
   configuration: ScheduleFree+ with the given overrides (``--sfplus NAME=JSON``), and AdamW with a cosine
   schedule at each of ``--adamw-lrs`` (warmup 10% of the steps: it knows the horizon);
3. report the validation loss on the fine-tuning text at x at the end (and, as "before", the pretrained model's).

    python benchmarks/short_finetune.py --out benchmarks/results/short_finetune

By default it pretrains on Debian's Austen and Melville texts and fine-tunes on the King James Bible (all
from ``sfplus data fetch``'s cache), 50k parameters, 2M pretraining tokens, 30 / 100 / 300 fine-tuning steps,
seeds 0-2. It writes ``<out>/short_finetune.json`` (every run) and ``<out>/short_finetune.md`` (mean, min-max
per configuration and step count, the best AdamW learning rate marked).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from sfplus_lab.config import CheckpointConfig, DataConfig, RunConfig, TrainConfig
from sfplus_lab.model import PRESETS
from sfplus_lab.optim_factory import OptimConfig, at_x, build_optimizer

#: The ScheduleFree+ configurations compared by default: the library's default (a 200-step warmup from the twelfth
#: session) and the eleventh session's 50-step warmup, whose shorter ramp a short fine-tune might prefer.
DEFAULT_SFPLUS = ('default={}', 'warmup50={"warmup_steps": 50}')


def debian_text(name: str) -> str:
    """The path of one text of the Debian corpus in the cache (``sfplus data fetch`` puts it there)."""
    from sfplus_lab.data.corpus import default_cache_dir

    path = default_cache_dir() / "debian" / "texts" / f"{name}.txt"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run `sfplus data fetch` first, or give --pretrain-data and "
                         "--finetune-data")
    return str(path)


def parse_sfplus(specs: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME=JSON`` pairs into {name: OptimConfig overrides}, with a clear error for a malformed one."""
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        try:
            overrides = json.loads(text) if sep else None
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--sfplus {spec!r}: the part after '=' is not JSON ({exc})") from None
        if not name or not isinstance(overrides, dict):
            raise SystemExit(f"--sfplus {spec!r}: expected NAME={{JSON object of OptimConfig fields}}")
        try:
            OptimConfig(**overrides)
        except TypeError as exc:
            raise SystemExit(f"--sfplus {spec!r}: {exc}") from None
        out[name] = overrides
    return out


def run_config(size: str, data: list[str], tokens: int, seed: int, optim: OptimConfig, args) -> RunConfig:
    return RunConfig(
        data=DataConfig(batch_size=args.batch_size, seq_len=args.seq_len, paths=data),
        optim=optim,
        train=TrainConfig(model_size=size, tokens=tokens, seed=seed, progress=False, eval_every=10**9,
                          eval_batches=args.eval_batches),
        checkpoint=CheckpointConfig(every=0, keep=2),
    )


def pretrain(corpus: Any, seed: int, args, tmp: Path) -> tuple[dict[str, torch.Tensor], float]:
    """The pretrained weights at x and their validation loss on the pretraining text."""
    from sfplus_lab.trainer import Trainer

    cfg = run_config(args.model, args.pretrain_data, args.pretrain_tokens, seed, OptimConfig(), args)
    trainer = Trainer(cfg, corpus, tmp / f"pretrain_s{seed}")
    result = trainer.run()
    with at_x(trainer.model, trainer.optimizer):
        weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return weights, float(result.final_eval["val_loss"])


def finetune(corpus: Any, weights: dict[str, torch.Tensor], seed: int, steps: int, optim: OptimConfig, args,
             run_dir: Path) -> tuple[float, float]:
    """(loss before, loss after) on the fine-tuning text's validation split, at x, after ``steps`` steps."""
    from sfplus_lab.trainer import Trainer

    tokens = steps * args.batch_size * args.seq_len
    trainer = Trainer(run_config(args.model, args.finetune_data, tokens, seed, optim, args), corpus, run_dir)
    assert trainer.total_steps == steps, (trainer.total_steps, steps)
    trainer.model.load_state_dict(weights)
    # a fresh optimizer over the loaded weights (ScheduleFree+ takes z and x from the parameters it is given)
    trainer.optimizer, trainer.scheduler = build_optimizer(optim, trainer.model, steps)
    before = trainer.evaluate()["val_loss"]
    result = trainer.run(resumed=True)  # resumed: no second evaluation at step 0
    after = result.final_eval["val_loss"] if result.final_eval else float("nan")
    return float(before), float(after)


def table(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    pre = ", ".join(Path(p).stem for p in doc["pretrain_data"])
    ft = ", ".join(Path(p).stem for p in doc["finetune_data"])
    first = runs[0]["config"], doc["steps"][0]
    before = statistics.fmean(r["before"] for r in runs if (r["config"], r["steps"]) == first)
    lines = [
        f"Fine-tuning the lab's {doc['model']} GPT (pretrained on {pre} for {doc['pretrain_tokens']:,} tokens with "
        f"the library's default) on {ft}; validation loss at x on the fine-tuning text, mean and [min, max] over "
        f"seeds {doc['seeds']}. Before fine-tuning: {before:.4f}. The best AdamW learning rate per step count is "
        "in bold.",
        "",
        "| configuration | " + " | ".join(f"{s} steps" for s in doc["steps"]) + " |",
        "|---|" + "---|" * len(doc["steps"]),
    ]
    names = list(dict.fromkeys(r["config"] for r in runs))
    cell: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        cell.setdefault((r["config"], r["steps"]), []).append(r["after"])
    best = {s: min((n for n in names if n.startswith("adamw") and (n, s) in cell),
                   key=lambda n, s=s: statistics.fmean(cell[(n, s)]), default=None) for s in doc["steps"]}
    for name in names:
        row = []
        for s in doc["steps"]:
            vals = cell.get((name, s), [])
            text = f"{statistics.fmean(vals):.4f} [{min(vals):.4f}, {max(vals):.4f}]" if vals else "-"
            row.append(f"**{text}**" if best[s] == name else text)
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="50k")
    ap.add_argument("--pretrain-data", nargs="+", default=None, help="as sfplus train --data (default: Debian's "
                    "austen and mobydick texts)")
    ap.add_argument("--finetune-data", nargs="+", default=None, help="default: Debian's kjv text")
    ap.add_argument("--pretrain-tokens", type=int, default=2_000_000)
    ap.add_argument("--steps", type=int, nargs="+", default=[30, 100, 300])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sfplus", nargs="+", default=list(DEFAULT_SFPLUS), metavar="NAME=JSON",
                    help="ScheduleFree+ configurations: OptimConfig overrides of the library's default")
    ap.add_argument("--adamw-lrs", type=float, nargs="*", default=[3e-4, 1e-3, 3e-3, 1e-2])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.model.lower() not in PRESETS:
        raise SystemExit(f"unknown --model {args.model}; choose from {', '.join(PRESETS)}")
    if any(s < 1 for s in args.steps) or args.pretrain_tokens < 1:
        raise SystemExit("--steps and --pretrain-tokens must be positive")
    args.pretrain_data = args.pretrain_data or [debian_text("austen"), debian_text("mobydick")]
    args.finetune_data = args.finetune_data or [debian_text("kjv")]
    sfplus_overrides = parse_sfplus(args.sfplus)
    configs: dict[str, OptimConfig] = {name: OptimConfig(**o) for name, o in sfplus_overrides.items()}
    for lr in args.adamw_lrs:
        configs[f"adamw-cosine lr {lr:g}"] = OptimConfig(name="adamw-cosine", lr=lr)

    from sfplus_lab.data import load_corpus

    pre_corpus, ft_corpus = load_corpus(args.pretrain_data), load_corpus(args.finetune_data)
    doc: dict[str, Any] = {k: getattr(args, k) for k in ("model", "pretrain_data", "finetune_data", "pretrain_tokens",
                                                            "steps", "seeds", "batch_size", "seq_len", "eval_batches")}
    doc.update(sfplus=sfplus_overrides, adamw_lrs=args.adamw_lrs, pretrain={}, runs=[])
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for seed in args.seeds:
            weights, pre_loss = pretrain(pre_corpus, seed, args, tmp)
            doc["pretrain"][str(seed)] = pre_loss
            print(f"seed {seed}: pretrained, val loss {pre_loss:.4f} on the pretraining text", flush=True)
            for steps in args.steps:
                for name, optim in configs.items():
                    if optim.name != "sfplus":  # the baseline knows the horizon: a 10% warmup
                        optim = OptimConfig(name=optim.name, lr=optim.lr, warmup_steps=max(1, steps // 10))
                    before, after = finetune(ft_corpus, weights, seed, steps, optim, args,
                                             tmp / f"ft_s{seed}_{steps}_{len(doc['runs'])}")
                    doc["runs"].append({"config": name, "seed": seed, "steps": steps, "before": before,
                                        "after": after})
                    print(f"  {steps} steps, {name}: {before:.4f} -> {after:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "short_finetune.json").write_text(json.dumps(doc, indent=1) + "\n")
    summary = table(doc)
    (args.out / "short_finetune.md").write_text(summary)
    print(summary, end="")


if __name__ == "__main__":
    sys.exit(main())
