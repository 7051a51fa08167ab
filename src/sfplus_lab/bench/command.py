"""``sfplus bench``: ScheduleFree+ (one fixed configuration) against tuned AdamW schedules and SF-AdamW.

    sfplus bench --out DIR [--data PATH ...] [--quick]

Runs the adaptive sweep of :mod:`sfplus_lab.bench.plan` in up to ``--workers`` processes (one torch thread
each), writes every finished run to ``DIR/runs/<id>.json`` (so rerunning the same command resumes), and
``DIR/results.json`` plus PNG figures and ``DIR/summary.md`` at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_atomic
from ..data import evaluable_sources
from ..errors import UserError
from ..flags import add_field_arguments
from .analysis import format_summary, summarize
from .config import BENCH_SIZES, BenchConfig, baselines, fixed_configs, quick_config
from .meta import run_meta
from .plan import next_jobs
from .runner import Job, load_bench_corpus, run_job

__all__ = ["add_arguments", "run", "run_benchmark"]

#: The fields that change what a run computes; runs in an output folder must agree on them to be reused.
_RUN_FIELDS = ("batch_size", "seq_len", "evals_per_decade", "baseline_evals_per_decade", "eval_tokens",
               "first_eval_tpp", "data", "tokenizer", "device", "lr_base")


#: The ``BenchConfig`` fields that have a flag of the same name; their help is the field's docstring.
_FIELD_FLAGS = ("sizes", "budgets", "baselines", "seeds", "sfplus_extra", "extra_seeds", "lr_grid", "long_sweep",
                "long_max_extensions", "long_seed_baselines", "batch_size", "seq_len", "workers", "tokenizer")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (results.json, figures, runs/); reruns resume")
    parser.add_argument("--data", nargs="+", default=None, metavar="PATH",
                        help="text files/folders, or 'debian' for the fetched corpus (default: built-in text)")
    parser.add_argument("--quick", action="store_true",
                        help="a few-minute smoke run (3k-param model, budgets 2/5/10 tok/param); same results schema")
    add_field_arguments(
        parser, BenchConfig, _FIELD_FLAGS, defaults=BenchConfig(),
        default_notes={"sizes": "250k on CUDA", "batch_size": "8 with --quick, 64 on CUDA",
                       "seq_len": "32 with --quick, 128 on CUDA", "workers": "1 with --quick"},
        options={"sizes": {"choices": list(BENCH_SIZES)},
                 "baselines": {"choices": baselines(), "metavar": "NAME"},
                 "sfplus_extra": {"nargs": "*", "choices": fixed_configs()},
                 "long_seed_baselines": {"nargs": "*", "choices": baselines()},
                 "lr_grid": {"metavar": "K"},
                 "long_sweep": {"choices": ("two-sided", "one-sided")},
                 "tokenizer": {"choices": ("byte", "bpe")}},
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--analyze-only", action="store_true",
                        help="do not train: rebuild results.json and figures from the runs already in --out")


def _config_from_args(args: argparse.Namespace) -> BenchConfig:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was given but torch.cuda.is_available() is False")
    overrides: dict[str, Any] = {"device": device}
    if device.startswith("cuda") and not args.quick:
        overrides.update(sizes=("250k",), batch_size=64, seq_len=128, eval_tokens=131072)
    for fld in _FIELD_FLAGS:
        value = getattr(args, fld)
        if value is not None:
            overrides[fld] = tuple(value) if isinstance(value, list) else value
    if args.data is not None:
        overrides["data"] = tuple(args.data)
    return quick_config(**overrides) if args.quick else BenchConfig(**overrides)


def run(name: str, args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)
    out = Path(args.out).expanduser()
    doc = run_benchmark(cfg, out, analyze_only=args.analyze_only)
    print(format_summary(doc))
    print(f"wrote {out / 'results.json'}")
    return 0


def _fingerprint(cfg: BenchConfig) -> str:
    d = cfg.to_dict()
    blob = json.dumps({k: d[k] for k in _RUN_FIELDS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_json(path: Path, obj: Any) -> None:
    """Write atomically: a crash never leaves a half-written results or run file."""
    write_atomic(path, json.dumps(obj, indent=1, allow_nan=True) + "\n")


def _load_runs(runs_dir: Path, fingerprint: str) -> dict[str, dict]:
    records: dict[str, dict] = {}
    for path in sorted(runs_dir.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a damaged file is rerun, not trusted
        if rec.get("fingerprint") != fingerprint:
            raise UserError(f"{runs_dir} holds runs made with other settings ({path.name}); use a new --out folder")
        records[rec["job"]["id"]] = rec
    return records


def _priority(job: Job, cfg: BenchConfig) -> tuple[int, float]:
    """Short sweeps first (they unlock the long runs), then the headline runs, then extra seeds and configs;
    within a rank the longest first."""
    n_layer, _, d = BENCH_SIZES[job.size]
    approx_params = 12 * n_layer * d * d + 256 * d
    rank = 0 if job.phase == "short" else 2 if job.phase == "seed" or job.method in cfg.sfplus_extra else 1
    return (rank, -job.horizon_tpp * approx_params)


def _job_entry(job_dict: dict[str, Any], cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Process-pool entry point: rebuild the job and config from plain dicts, run, return the record."""
    cfg = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg_dict.items()})
    return run_job(Job.from_dict(job_dict), cfg)


def _execute(cfg: BenchConfig, runs_dir: Path, records: dict[str, dict], on_done) -> None:
    """Run due jobs, at most ``cfg.workers`` at once, asking the planner again after every finished job."""
    fingerprint = _fingerprint(cfg)
    cfg_dict = cfg.to_dict()
    pool = None
    previous = _set_sigterm(_interrupt)  # a killed benchmark stops its workers too (finally below)
    if cfg.workers > 1:
        pool = cf.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=multiprocessing.get_context("spawn"))
    running: dict[cf.Future, Job] = {}
    try:
        while True:
            due, complete = next_jobs(cfg, records)
            in_flight = {j.id for j in running.values()}
            pending = sorted({j.id: j for j in due if j.id not in in_flight}.values(), key=lambda j: _priority(j, cfg))
            if complete and not running:
                return
            if not pending and not running:
                raise RuntimeError("benchmark plan stalled: nothing due, nothing running, plan not complete")
            while pending and (pool is None and not running or pool is not None and len(running) < cfg.workers):
                job = pending.pop(0)
                if pool is None:
                    rec = run_job(job, cfg)
                    _finish(rec, fingerprint, runs_dir, records, on_done)
                    break
                running[pool.submit(_job_entry, job.to_dict(), cfg_dict)] = job
            if pool is None:
                continue
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                running.pop(fut)
                _finish(fut.result(), fingerprint, runs_dir, records, on_done)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():  # the running jobs; their finished peers are saved
                child.terminate()
        _set_sigterm(previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _set_sigterm(handler: Any) -> Any:
    """Install a SIGTERM handler where possible (the main thread); return the previous one."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, TypeError):  # not the main thread, or no previous Python-level handler to restore
        return None


def _finish(rec: dict, fingerprint: str, runs_dir: Path, records: dict[str, dict], on_done) -> None:
    rec["fingerprint"] = fingerprint
    _write_json(runs_dir / f"{rec['job']['id']}.json", rec)
    records[rec["job"]["id"]] = rec
    on_done(rec)


def _progress(rec: dict) -> None:
    finals = ", ".join(f"{b}: {'diverged' if f['diverged'] else format(f['pooled'], '.4f')}"
                       for b, f in rec["finals"].items())
    print(f"[{time.strftime('%H:%M:%S')}] {rec['job']['id']}: {finals} ({rec['wall_s']:.0f} s, "
          f"{rec['tok_per_s']:.0f} tok/s)", flush=True)


def _document(cfg: BenchConfig, records: dict[str, dict], corpus: Any, started: float, complete: bool,
              meta_at_start: dict[str, Any]) -> dict:
    from ..optim_factory import OptimConfig

    return {
        "benchmark": "quality",
        "schema": 1,
        "complete": complete,
        "meta": run_meta(cfg.device),
        "meta_at_start": meta_at_start,  # the code the workers imported (they start with the run)
        "config": cfg.to_dict(),
        "sfplus_config": OptimConfig(name="sfplus").resolved().to_dict(),
        "corpus": {"name": corpus.name, "vocab_size": corpus.vocab_size, "meta": corpus.meta},
        "sizes": summarize(cfg, records),
        "runs": [{"id": rid, "wall_s": r["wall_s"], "tok_per_s": r["tok_per_s"], "diverged": r["diverged"],
                  "file": f"runs/{rid}.json"} for rid, r in sorted(records.items())],
        "wall_s": time.time() - started,
        "cpu_seconds_of_runs": sum(r["wall_s"] for r in records.values()),
    }


def run_benchmark(cfg: BenchConfig, out: Path, *, analyze_only: bool = False) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``out`` and return the results document."""
    started = time.time()
    torch.set_num_threads(cfg.threads)
    meta_at_start = run_meta(cfg.device)
    try:
        runs_dir = out / "runs"
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc}") from exc
    corpus = load_bench_corpus(cfg.data, cfg.tokenizer)  # fails early, with a clear message, on a bad --data
    evaluable_sources(corpus, cfg.seq_len)  # too short to train or evaluate: a UserError before any run
    records = _load_runs(runs_dir, _fingerprint(cfg))
    if records:
        print(f"resuming: {len(records)} finished runs in {runs_dir}", flush=True)

    def on_done(rec: dict) -> None:
        _progress(rec)
        _write_json(out / "results.json", _document(cfg, records, corpus, started, False, meta_at_start))

    if not analyze_only:
        _execute(cfg, runs_dir, records, on_done)
    _, complete = next_jobs(cfg, records)
    doc = _document(cfg, records, corpus, started, complete, meta_at_start)
    _write_json(out / "results.json", doc)
    from .plots import draw_all

    draw_all(doc, out)
    (out / "summary.md").write_text(format_summary(doc) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    """``python -m sfplus_lab.bench.command`` (the same as ``sfplus bench``)."""
    from ..cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
