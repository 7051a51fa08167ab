"""Run a function in N gloo processes on CPU and collect what each rank returns.

Starting a process costs an import of torch, so the tests start each world once and run many
scenarios inside it (``run_world``); a scenario that fails records its traceback and the remaining
ones are not run (a rank that raised mid-collective would leave the others waiting).

Rendezvous goes through a file store in a fresh temporary folder, so no TCP port has to be free
and two test runs on one machine cannot meet. ``dist.barrier()`` precedes
``destroy_process_group()``: without it gloo aborts at exit about a third of the time.
"""

from __future__ import annotations

import datetime
import gc
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: Collectives give up after this long instead of hanging the test run.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)
#: The whole world (start, scenarios, shutdown) must finish within this many seconds.
WORLD_TIMEOUT_S = 240.0

Scenario = Callable[[int, int, str], Any]


def _worker(rank: int, world: int, store_file: str, out_dir: str, scenarios: dict[str, Scenario]) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"file://{store_file}", rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT
    )
    results: dict[str, Any] = {}
    failed = None
    for name, fn in scenarios.items():
        if failed is not None:
            results[name] = {"error": f"not run: scenario {failed!r} failed before it"}
            continue
        work_dir = os.path.join(out_dir, name)
        os.makedirs(work_dir, exist_ok=True)
        try:
            results[name] = {"value": fn(rank, world, work_dir)}
        except Exception:
            results[name] = {"error": traceback.format_exc()}
            failed = name
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    gc.collect()  # models (DDP, FSDP) hold the process group; dying at interpreter exit, gloo can abort
    if failed is None:
        dist.barrier()
    dist.destroy_process_group()
    if failed is None:
        # Skip interpreter finalization: gloo objects torn down there can abort the process
        # ("terminate called without an active exception") after every result is safely written.
        os._exit(0)


def run_world(world: int, scenarios: dict[str, Scenario]) -> list[dict[str, Any]]:
    """Run every scenario in order on ``world`` gloo ranks; return, per rank, ``{name: {"value"|"error": ...}}``.

    A scenario is ``fn(rank, world, work_dir) -> picklable`` (a module-level function, so that the
    spawned processes can import it); ``work_dir`` is a folder shared by the ranks.
    """
    with tempfile.TemporaryDirectory(prefix="sfplus-dist-") as tmp:
        store_file = os.path.join(tmp, "store")
        ctx = mp.start_processes(
            _worker, args=(world, store_file, tmp, scenarios), nprocs=world, join=False, start_method="spawn"
        )
        start = time.monotonic()
        while not ctx.join(timeout=2.0):  # re-raises a rank's exception as ProcessRaisedException
            if time.monotonic() - start > WORLD_TIMEOUT_S:
                for process in ctx.processes:
                    process.kill()
                raise TimeoutError(f"{world} gloo ranks did not finish within {WORLD_TIMEOUT_S} s")
        out = []
        for rank in range(world):
            out.append(torch.load(os.path.join(tmp, f"rank{rank}.pt"), weights_only=False))
        return out


def value(results: list[dict[str, Any]], name: str) -> list[Any]:
    """The per-rank values of scenario ``name``; fails the calling test with the rank's traceback."""
    values = []
    for rank, per_rank in enumerate(results):
        entry = per_rank[name]
        if "error" in entry:
            raise AssertionError(f"scenario {name!r} failed on rank {rank}:\n{entry['error']}")
        values.append(entry["value"])
    return values
