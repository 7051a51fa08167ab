"""More seeds of one tuned baseline run of a finished ``sfplus bench`` results file.

A benchmark reruns each baseline's best learning rate with ``--seeds`` seeds (2 in the committed files), while
``benchmarks/sfplus_rerun.py`` trains ScheduleFree+ with 4-8. Picking the best of four baselines by a 2-seed
mean favours the baseline (the lowest of four noisy means), and a half-range over 2 seeds is smaller than one
over 8 from the same spread. This script trains the same job as an existing run (given by its id, as in
``results.json``'s ``run_ids``) with other seeds and the file's settings, so both sides of a comparison have
as many seeds:

    python benchmarks/baseline_seeds.py benchmarks/results/quality_cpu_debian \
        6k_adamw-cosine_lr0.064_s1_decay_b1000_h1000 --seeds 2 3 4 5 6 7 --out benchmarks/results/seeds_6k

Runs are cached in ``<out>/runs/`` (not committed) and reused; ``<out>/baseline_seeds.json`` collects every
seed's final pooled loss per budget, the file's own seeds included (from its ``cells``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sfplus_rerun import _run, bench_config  # noqa: E402

from sfplus_lab.bench.runner import Job  # noqa: E402

_ID = re.compile(r"^(?P<size>[^_]+)_(?P<method>[^_]+)_lr(?P<lr>[^_]+)_s(?P<seed>\d+)_(?P<kind>[^_]+)"
                 r"_b(?P<budgets>[^_]+)_h(?P<horizon>[^_]+)$")  # fmt: skip


def _parse(run_id: str) -> re.Match:
    m = _ID.match(run_id)
    if m is None:
        raise SystemExit(f"not a baseline run id: {run_id!r} (expected size_method_lrX_sN_kind_bB_hH)")
    return m


def _with_seed(m: re.Match, seed: int) -> str:
    """The parsed id with its seed replaced."""
    return m.string[: m.start("seed")] + str(seed) + m.string[m.end("seed"):]


def job_for(run_id: str, seed: int, k: int | None) -> Job:
    """The job of ``run_id`` with another seed (a baseline's id: a learning rate, not ``default``)."""
    m = _parse(run_id)
    job = Job(size=m["size"], method=m["method"], lr=float(m["lr"]), k=k, seed=seed, kind=m["kind"],
              budgets=[float(b) for b in m["budgets"].split("-")], horizon_tpp=float(m["horizon"]), phase="seed")
    expected = _with_seed(m, seed)
    if job.id != expected:  # the id does not round-trip (a number formatted differently): refuse to guess
        raise SystemExit(f"rebuilt job id {job.id!r} differs from {expected!r}")
    return job


def file_finals(doc: dict, run_id: str) -> tuple[int | None, dict[str, dict[int, float]]]:
    """The grid exponent of the run's learning rate, and its seeds' finals per budget from the file's cells."""
    same_job = _with_seed(_parse(run_id), 0)
    k, finals = None, {}
    for size in doc["sizes"].values():
        for cell in size["cells"]:
            for rid, value in zip(cell["run_ids"], cell["final_pooled"]):
                m = _ID.match(rid)
                if m is not None and _with_seed(m, 0) == same_job:
                    k = cell["best_k"]
                    finals.setdefault(f"{cell['budget']:g}", {})[int(m["seed"])] = value
    return k, finals


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a folder written by sfplus bench (with results.json)")
    ap.add_argument("run_id", help="the id of one of its baseline runs (results.json, cells' run_ids)")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    doc = json.loads((args.results / "results.json").read_text())
    k, finals = file_finals(doc, args.run_id)
    if not finals:
        raise SystemExit(f"{args.run_id} is not in {args.results}/results.json")
    cfg = bench_config(doc)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        job = job_for(args.run_id, seed, k)
        record = _run((job, cfg, args.out / "runs" / f"{job.id}.json"))
        for budget, value in record["finals"].items():
            finals.setdefault(budget, {})[seed] = value["pooled"]
        print(job.id, {b: round(v[seed], 4) for b, v in finals.items() if seed in v}, flush=True)
    summary_path = args.out / "baseline_seeds.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary[args.run_id] = {"source": str(args.results), "finals": {
        b: {str(s): v for s, v in sorted(values.items())} for b, values in finals.items()}}  # fmt: skip
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
