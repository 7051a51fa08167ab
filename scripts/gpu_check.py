#!/usr/bin/env python3
"""The one-command GPU check: tests, step cost, host syncs and a short training run.

On the GPU machine (no package registry needed; nothing is downloaded)::

    python3 -m pip install --no-deps --no-build-isolation -e .    # optional: the script also runs from src/
    python3 scripts/gpu_check.py --out DIR                         # about 8 minutes at most on one GPU

The CPU form that CI runs (tiny shapes, a few steps, seconds of training)::

    python scripts/gpu_check.py --tiny --out DIR

It writes ``DIR/gpu_check.json`` (every number, every error), ``DIR/gpu_check.md`` (a short summary) and
``DIR/gpu_check.log`` (the output of every part). The parts, in order, each in its own process with a
time limit, so that a part that fails, hangs or crashes is recorded with its error and the rest still run:

1. ``host_sync``: one ScheduleFree+ step per path with ``torch.cuda.set_sync_debug_mode("error")``: does
   the step synchronise with the host? (and, in "warn" mode, how often and where). On CPU there is no
   such mode: the tiny form records the calls that would synchronise on a GPU (``.item()``,
   ``.tolist()``, ``bool()``, ``float()``...) by wrapping them during the step.
2. ``gpu_tests``: ``pytest -m gpu`` on the test files that use the marker, with pass/fail counts.
3. ``step_benchmark``: one optimizer step at GPT-2-124M parameter shapes (148 tensors, 124.4M
   parameters) in fp32 and bf16: fused AdamW, Schedule-Free AdamW (if ``schedulefree`` imports) and
   every ScheduleFree+ path, each also with ``capturable=True`` where the constructor takes it; median
   of the timed steps after warmup, as a ratio to fused AdamW of the same run and dtype.
4. ``train``: ``sfplus train --compile`` on CUDA (the lab trains under bf16 autocast on CUDA, fp32
   master weights: it has no dtype flag) for ScheduleFree+ and adamw-cosine, same model, batch and token
   budget, each stopped by SIGTERM at its time limit if it has not finished; tokens/s and final val loss.

docs/gpu.md says what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
SCHEMA = 1
PARTS = ("host_sync", "gpu_tests", "step_benchmark", "train")
INSTALL_HINT = "python3 -m pip install --no-deps --no-build-isolation -e ."

# ---------------------------------------------------------------------------------------------- the plan

#: GPT-2 124M: vocabulary 50257, width 768, 12 layers, context 1024, biases, tied embedding.
GPT2_124M = {"vocab": 50257, "d": 768, "layers": 12, "ctx": 1024}
#: A GPT-2-shaped model of 8,640 parameters for the CPU form.
GPT2_TINY = {"vocab": 96, "d": 16, "layers": 2, "ctx": 32}


def gpt2_shapes(vocab: int, d: int, layers: int, ctx: int) -> list[tuple[int, ...]]:
    """The parameter shapes of GPT-2 (Hugging Face's module order, Conv1D weights as in x out)."""
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),  # ln_1, c_attn, attn c_proj
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]  # ln_2, c_fc, mlp c_proj
    return shapes + [(d,), (d,)]  # ln_f


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    tiny = args.tiny
    device = args.device or ("cpu" if tiny else "cuda")
    plan: dict[str, Any] = {
        "mode": "tiny" if tiny else "full",
        "device": device,
        "budget_s": args.budget_s if args.budget_s is not None else (150.0 if tiny else 480.0),
        # Longest each part may run; it also leaves the parts after it at least their min_s of the budget.
        "caps_s": ({"host_sync": 60, "gpu_tests": 60, "step_benchmark": 90, "train": 90} if tiny else
                   {"host_sync": 100, "gpu_tests": 100, "step_benchmark": 150, "train": 300}),
        "min_s": ({"host_sync": 10, "gpu_tests": 10, "step_benchmark": 10, "train": 20} if tiny else
                  {"host_sync": 30, "gpu_tests": 40, "step_benchmark": 60, "train": 180}),
        "step": {
            "shape": GPT2_TINY if tiny else GPT2_124M,
            "dtypes": ["fp32", "bf16"],
            "warmup": args.step_warmup if args.step_warmup is not None else (2 if tiny else 5),
            "repeats": args.step_repeats if args.step_repeats is not None else (3 if tiny else 20),
        },
        # The step benchmark's shapes: its process then finds the compiled step in inductor's on-disk cache.
        "sync": {"shape": GPT2_TINY if tiny else GPT2_124M, "warmup": 2},
        "train": {
            "optimizers": ["sfplus", "adamw-cosine"],
            "model": "3k" if tiny else "10m",
            "tokens": args.train_tokens or (4096 if tiny else 16_000_000),
            "batch_size": 4 if tiny else 64,
            "seq_len": 32 if tiny else 256,
            # torch.compile of the model takes ~15 s per run on a CPU: the tiny form leaves it out.
            "compile": (not tiny) if args.compile is None else args.compile,
            "seconds_per_run": args.train_seconds or (30.0 if tiny else 120.0),
            "grace_s": 10.0 if tiny else 15.0,  # after SIGTERM, before SIGKILL
            "eval_every": 16 if tiny else 200,
            "eval_batches": 2 if tiny else 8,
        },
    }
    return plan


# ---------------------------------------------------------------------------------------------- helpers


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


def _short(path: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(REPO))
    return path


def _child_env(plan: dict[str, Any]) -> dict[str, str]:
    """This checkout's src/ first on the path (works installed or not); one thread per op on the tiny form."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    if plan["mode"] == "tiny":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:]


class Partial:
    """A part's result dict, rewritten to disk after every change (a timed-out part keeps what it had)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def save(self) -> None:
        from sfplus_lab.atomic import write_atomic  # src/ is on the path of every part's process

        write_atomic(self.path, json.dumps(self.data, indent=1, default=str))


# ---------------------------------------------------------------------------------------------- environment


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "executable": sys.executable}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env["gpu"] = props.name
            env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            env["gpu_capability"] = f"{props.major}.{props.minor}"
            env["gpu_count"] = torch.cuda.device_count()
    except Exception as exc:
        env["torch_error"] = _err(exc)
    for name in ("sfplus", "schedulefree", "transformers", "lightning", "matplotlib", "tqdm", "numpy"):
        env[f"pkg_{name}"] = _package(name)
    try:
        import sfplus

        origin = Path(sfplus.__file__).resolve()
        env["sfplus_file"] = _short(str(origin))
        env["sfplus_from_this_checkout"] = SRC in origin.parents
    except Exception as exc:
        env["sfplus_error"] = _err(exc)
    env["git"] = _git()
    return env


def _package(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
    except Exception as exc:
        return f"unknown ({_err(exc)})"


def _git() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                       timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--", "src", "scripts"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout
        out["uncommitted_in_src_or_scripts"] = [line[3:] for line in status.splitlines()]
    except Exception as exc:
        out["error"] = _err(exc)
    return out


# ---------------------------------------------------------------------------------------------- part: host sync


def _sfplus_paths() -> dict[str, dict[str, Any]]:
    """Every ScheduleFree+ path, as constructor flags; "default" is what a user gets with no flags."""
    return {
        "sfplus-forloop": {"foreach": False, "fused": False},
        "sfplus-foreach": {"foreach": True, "fused": False},
        "sfplus-fused": {"fused": True},
        "sfplus-default": {},
    }


def _make_params(shapes, device, dtype, seed: int = 0):
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)  # drawn on the device: 124M draws on a CPU take seconds
    params = []
    for shape in shapes:
        p = (torch.randn(shape, generator=gen, device=device) * 0.02).to(dtype).requires_grad_(True)
        p.grad = (torch.randn(shape, generator=gen, device=device) * 1e-3).to(dtype)
        params.append(p)
    return params


def _resolved_path(opt) -> str | None:
    """Which path the optimizer's first group runs ("single", "foreach", "fused"): private, so None if renamed."""
    try:
        return str(opt._path(opt.param_groups[0]))
    except Exception:
        return None


def _compile_failed() -> bool | None:
    """Whether the library gave up on torch.compile (it then runs foreach silently, with one warning)."""
    try:
        import sfplus.functional as F

        return bool(F._compile_failed)
    except Exception:
        return None


_HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu")


@contextlib.contextmanager
def _record_host_reads():
    """The CPU proxy: wrap the Tensor methods that read a value to the host (they synchronise on a GPU)."""
    import torch

    calls: list[str] = []
    saved = {name: torch.Tensor.__dict__.get(name) for name in _HOST_READS}

    def wrap(name, original):
        def wrapper(self, *args, **kwargs):
            frame = sys._getframe(1)
            calls.append(f"{name}() at {_short(frame.f_code.co_filename)}:{frame.f_lineno}")
            return original(self, *args, **kwargs)

        return wrapper

    for name in _HOST_READS:
        setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    try:
        yield calls
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def _frames_in_library(tb) -> list[str]:
    """'file:line' of the traceback's frames inside src/ (where in the library the sync happened)."""
    return [f"{_short(f.filename)}:{f.lineno}" for f in traceback.extract_tb(tb) if str(SRC) in f.filename]


def part_host_sync(plan: dict[str, Any], res: Partial) -> None:
    import torch

    import sfplus

    device = torch.device(plan["device"])
    cfg = plan["sync"]
    shapes = gpt2_shapes(**cfg["shape"])
    res.data.update(device=str(device), num_params=sum(math.prod(s) for s in shapes), num_tensors=len(shapes),
                    method=("torch.cuda.set_sync_debug_mode('error') during one step (and 'warn' for the count)"
                            if device.type == "cuda" else
                            "CPU proxy: calls of Tensor.item/tolist/__bool__/__float__/__int__/numpy/cpu during "
                            "one step (each would synchronise if its tensor were on a GPU)"),
                    loss="a 0-dim tensor on the device (as in a training loop)", rows=[])
    res.save()
    builders = {name: (lambda p, f=flags, **kw: sfplus.ScheduleFreePlus(p, weight_decay=20.0, **f, **kw))
                for name, flags in _sfplus_paths().items()}
    builders["adamw-fused (reference)"] = lambda p, **kw: torch.optim.AdamW(p, lr=1e-3, fused=True, **kw)
    for name, build in builders.items():
        row: dict[str, Any] = {"method": name}
        res.data["rows"].append(row)
        try:
            params = _make_params(shapes, device, torch.float32)
            opt = build(params)
            needs_loss = name.startswith("sfplus")
            step = partial(opt.step, loss=torch.tensor(3.0, device=device)) if needs_loss else opt.step
            for _ in range(cfg["warmup"]):  # state, compilation
                step()
            row["path"] = _resolved_path(opt) if needs_loss else "fused"
            if device.type == "cuda":
                _cuda_sync_check(step, row)
            else:
                with _record_host_reads() as calls:
                    step()
                row["syncs"] = bool(calls)
                row["sync_count"] = len(calls)
                row["locations"] = sorted(set(calls))
            row["status"] = "ok"
        except Exception as exc:
            row.update(status="error", error=_err(exc), traceback=_tail(traceback.format_exc(), 1500))
        res.save()
    # Last in this process: a failed capture can leave the CUDA context unusable.
    res.data["graph_capture"] = graph_rows = []
    for name in sorted(builders, key=lambda n: not n.startswith("adamw")):  # the reference first
        build = builders[name]
        row = {"method": name + "+capturable"}
        graph_rows.append(row)
        if device.type != "cuda":
            row.update(status="not run", reason="CUDA graphs: CUDA only")
            continue
        try:
            params = _make_params(shapes, device, torch.float32)
            try:
                opt = build(params, capturable=True)
            except TypeError as exc:
                row.update(status="unsupported", reason="capturable not supported yet" if name.startswith("sfplus")
                           else "capturable not supported", error=_err(exc))
                continue
            needs_loss = name.startswith("sfplus")
            step = partial(opt.step, loss=torch.tensor(3.0, device=device)) if needs_loss else opt.step
            _graph_capture(step, row)
        except Exception as exc:
            row.update(status="error", error=_err(exc), traceback=_tail(traceback.format_exc(), 1500))
        res.save()


def _graph_capture(step, row: dict[str, Any], replays: int = 10) -> None:
    """Capture one step in a CUDA graph (warmed up on a side stream, as torch requires) and time replays."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            step()
    except Exception as exc:
        row.update(status="ok", captured=False, capture_error=_err(exc)[:500])
        return
    times = []
    for _ in range(replays):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    row.update(status="ok", captured=True, replay_median_ms=statistics.median(times) * 1e3)


def _cuda_sync_check(step, row: dict[str, Any]) -> None:
    import torch

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    row["sync_count"] = len(syncs)
    row["locations"] = sorted({f"{_short(w.filename)}:{w.lineno}" for w in syncs})
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        row["syncs"] = False
    except RuntimeError as exc:
        row["syncs"] = True
        row["error_mode_message"] = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        row["error_mode_where"] = (_frames_in_library(exc.__traceback__) or ["?"])[-1]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- part: gpu tests


def _gpu_test_files() -> list[str]:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text(errors="replace"))
    return files or ["tests"]


def part_gpu_tests(plan: dict[str, Any], res: Partial, work: Path, deadline: float) -> None:
    import xml.etree.ElementTree as ET

    junit = work / "gpu_tests.xml"
    files = _gpu_test_files()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
           *files]
    res.data.update(command=" ".join(["python", *cmd[1:]]), files=files)
    res.save()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=_child_env(plan), capture_output=True, text=True,
                              timeout=max(5.0, deadline - time.time() - 5))
    except subprocess.TimeoutExpired as exc:
        res.data.update(timed_out=True, output_tail=_tail((exc.stdout or b"").decode(errors="replace")
                                                         if isinstance(exc.stdout, bytes) else (exc.stdout or "")))
        raise
    res.data.update(exit_code=proc.returncode, wall_s=round(time.monotonic() - t0, 1),
                    output_tail=_tail(proc.stdout + proc.stderr, 4000))
    counts = {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures: list[dict[str, str]] = []
    skip_reasons: set[str] = set()
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            counts["total"] += 1
            name = f"{case.get('classname')}::{case.get('name')}"
            kinds = {child.tag: child for child in case}
            if "failure" in kinds or "error" in kinds:
                key = "failure" if "failure" in kinds else "error"
                counts["failed" if key == "failure" else "errors"] += 1
                failures.append({"test": name, "kind": key, "message": (kinds[key].get("message") or "")[:500]})
            elif "skipped" in kinds:
                counts["skipped"] += 1
                skip_reasons.add((kinds["skipped"].get("message") or "")[:200])
            else:
                counts["passed"] += 1
    res.data.update(counts=counts, failures=failures, skip_reasons=sorted(skip_reasons))
    if proc.returncode not in (0, 1, 5):  # 0 all passed, 1 some failed, 5 none collected
        raise RuntimeError(f"pytest exited with {proc.returncode} (interrupted, internal or usage error)")


# ---------------------------------------------------------------------------------------------- part: step bench


#: The methods whose warmup compiles (sfplus-default compiles for groups of >= 2**20 elements).
COMPILED = ("sfplus-fused", "sfplus-default")


def _step_methods() -> dict[str, tuple[Any, bool, str]]:
    """name -> (build(params, **extra), needs_loss, what 'capturable' unsupported means for it)."""
    import torch

    def adamw(params, **kw):
        return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True, **kw)

    def sf_adamw(params, **kw):
        import schedulefree

        opt = schedulefree.AdamWScheduleFree(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True,
                                             **kw)
        opt.train()
        return opt

    def sfplus_with(flags):
        def build(params, **kw):
            from sfplus import ScheduleFreePlus

            # λ = 20 (the paper's range) so the AdamC decay term is part of the timed step, as in the CPU benchmark.
            return ScheduleFreePlus(params, weight_decay=20.0, **flags, **kw)

        return build

    methods: dict[str, tuple[Any, bool, str]] = {
        "adamw-fused": (adamw, False, "not supported"),
        "sf-adamw": (sf_adamw, False, "not supported"),
    }
    for name, flags in _sfplus_paths().items():
        methods[name] = (sfplus_with(flags), True, "not supported yet")
    return methods


def _build(build, params, capturable: bool, unsupported: str) -> tuple[Any, dict[str, Any] | None]:
    kwargs = {"capturable": True} if capturable else {}  # detected by trying: the argument may come later
    try:
        return build(params, **kwargs), None
    except ModuleNotFoundError as exc:
        return None, {"status": "not installed", "reason": "not installed", "error": _err(exc)}
    except TypeError as exc:
        if capturable and "capturable" in str(exc):
            return None, {"status": "unsupported", "reason": f"capturable {unsupported}", "error": _err(exc)}
        return None, {"status": "error", "error": _err(exc)}
    except Exception as exc:
        if capturable and "capturable" in str(exc):
            return None, {"status": "unsupported", "reason": f"capturable {unsupported}", "error": _err(exc)}
        return None, {"status": "error", "error": _err(exc)}


def _warm(live: dict, names: list[str], cfg: dict, step, sync, res: Partial) -> None:
    """Untimed steps: state, and compilation for the compiled paths."""
    for name in [name for name in names if name in live]:
        opt, needs_loss, row = live[name]
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for _ in range(cfg["warmup"]):
                    step(opt, needs_loss)
                sync()
            row["warmup_s"] = round(time.perf_counter() - t0, 2)
            messages = sorted({str(w.message)[:300] for w in caught if "compile" in str(w.message).lower()})
            if messages:
                row["warnings"] = messages
            if needs_loss:
                row["path"] = _resolved_path(opt)
                if row["base"] in COMPILED and _compile_failed():
                    row["note"] = "torch.compile failed: this row timed the foreach fallback"
        except Exception as exc:
            row.update(status="error", error=_err(exc), traceback=_tail(traceback.format_exc(), 1200))
            del live[name]
        res.save()


def _time_rounds(live: dict, names: list[str], rows: list, phase: str, cfg: dict, step, sync, res: Partial) -> None:
    """These methods, interleaved, the order rotated each round; medians and ratios into the rows."""
    order = [name for name in names if name in live]
    times: dict[str, list[float]] = {name: [] for name in order}
    for r in range(cfg["repeats"] if order else 0):
        for name in order[r % len(order):] + order[: r % len(order)]:
            if name not in live:
                continue
            opt, needs_loss, row = live[name]
            try:
                sync()
                t0 = time.perf_counter()
                step(opt, needs_loss)
                sync()
                times[name].append(time.perf_counter() - t0)
            except Exception as exc:
                row.update(status="error", error=_err(exc))
                del live[name]
    from sfplus_lab.bench.step_math import quantile  # src/ is on the path of every part's process

    for name in order:
        if name not in live:
            continue
        opt, needs_loss, row = live[name]
        ts = times[name]
        row.update(status="ok", timed_in=phase, median_ms=statistics.median(ts) * 1e3,
                   p25_ms=quantile(ts, 0.25) * 1e3, p75_ms=quantile(ts, 0.75) * 1e3, min_ms=min(ts) * 1e3,
                   timed_steps=len(ts))
        if needs_loss:
            with contextlib.suppress(Exception):
                skipped = int(float(opt.stats.get("num_skipped", 0)))
                row["skipped_steps"] = skipped
                if skipped:
                    row["note"] = f"skipped {skipped} steps: its timing is not valid"
    base = next((r for r in rows if r["method"] == "adamw-fused" and r.get("status") == "ok"), None)
    for row in rows:
        if base is not None and row.get("status") == "ok":
            row["ratio_to_adamw_fused"] = row["median_ms"] / base["median_ms"]
    res.save()


def part_step_benchmark(plan: dict[str, Any], res: Partial) -> None:
    import torch

    cfg = plan["step"]
    device = torch.device(plan["device"])
    shapes = gpt2_shapes(**cfg["shape"])
    res.data.update(shape=cfg["shape"], num_params=sum(math.prod(s) for s in shapes), num_tensors=len(shapes),
                    warmup=cfg["warmup"], repeats=cfg["repeats"], device=str(device),
                    loss="sfplus steps get loss= a 0-dim tensor on the device", dtypes={})
    res.save()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for dtype_name in cfg["dtypes"]:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        rows: list[dict[str, Any]] = []
        res.data["dtypes"][dtype_name] = {"rows": rows}
        try:
            params = _make_params(shapes, device, dtype)
        except Exception as exc:
            res.data["dtypes"][dtype_name]["error"] = _err(exc)
            res.save()
            continue
        loss = torch.tensor(3.0, device=device)
        live: dict[str, tuple[Any, bool, dict[str, Any]]] = {}
        for base, (build, needs_loss, unsupported) in _step_methods().items():
            for capturable in (False, True):
                name = base + ("+capturable" if capturable else "")
                row: dict[str, Any] = {"method": name, "base": base, "capturable": capturable}
                rows.append(row)
                opt, failure = _build(build, params, capturable, unsupported)
                if failure is not None:
                    row.update(failure)
                    continue
                live[name] = (opt, needs_loss, row)
        res.save()

        def step(opt, needs_loss, loss=loss):
            if needs_loss:
                opt.step(loss=loss)
            else:
                opt.step()

        # Two phases, so that a compilation that outlasts the part's time limit still leaves the eager
        # methods timed: the eager methods first, then everything again once the compiled paths are warm
        # (the second timing replaces the first; every ratio is to fused AdamW of the same rounds).
        compiled = [name for name in live if live[name][2]["base"] in COMPILED]
        eager = [name for name in live if name not in compiled]
        _warm(live, eager, cfg, step, sync, res)
        _time_rounds(live, eager, rows, "eager methods only (the compiled paths were not warm yet)", cfg, step, sync,
                     res)
        _warm(live, compiled, cfg, step, sync, res)
        _time_rounds(live, list(live), rows, "all methods", cfg, step, sync, res)
        res.save()
        del live, params
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- part: train


def part_train(plan: dict[str, Any], res: Partial, work: Path, deadline: float) -> None:
    cfg = plan["train"]
    deadline -= 5  # to read the metrics and write the result
    res.data.update(config=cfg, precision=("bf16 autocast, fp32 master weights (the lab's CUDA policy; "
                                           "sfplus train has no dtype flag)" if plan["device"].startswith("cuda")
                                           else "fp32 (the lab trains in fp32 on CPU)"), runs={})
    res.save()
    optimizers = cfg["optimizers"]
    for i, name in enumerate(optimizers):
        left = deadline - time.time()
        share = left / (len(optimizers) - i) - cfg["grace_s"]  # this run's fair share of what is left
        seconds = min(cfg["seconds_per_run"], share)
        run: dict[str, Any] = {}
        res.data["runs"][name] = run
        if share < 5:
            run.update(status="skipped", error=f"no time left ({left:.0f} s of the part's limit)")
            res.save()
            continue
        try:
            _train_one(plan, name, work / "train" / name, seconds, run)
            run.setdefault("status", "ok")
        except Exception as exc:
            run.update(status="error", error=_err(exc))
        res.save()


def _train_one(plan: dict[str, Any], optimizer: str, run_dir: Path, seconds: float, run: dict[str, Any]) -> None:
    cfg = plan["train"]
    cmd = [sys.executable, "-m", "sfplus", "train", "--optimizer", optimizer, "--model", cfg["model"],
           "--tokens", str(cfg["tokens"]), "--batch-size", str(cfg["batch_size"]), "--seq-len", str(cfg["seq_len"]),
           "--device", plan["device"], "--eval-every", str(cfg["eval_every"]), "--evals-per-decade", "0",
           "--eval-batches", str(cfg["eval_batches"]), "--checkpoint-every", "0", "--no-progress",
           "--cache-dir", str(run_dir.parent / "cache"), "--out", str(run_dir), "--force"]
    if cfg["compile"]:
        cmd.append("--compile")
    run.update(command="sfplus " + " ".join(cmd[3:]), time_limit_s=round(seconds, 1))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.parent / f"{optimizer}.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        # (in the part's process group: a part stopped at its time limit takes its training run with it)
        proc = subprocess.Popen(cmd, cwd=run_dir.parent, env=_child_env(plan), stdout=log, stderr=subprocess.STDOUT)
        stopped = False
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            stopped = True
            proc.send_signal(signal.SIGTERM)  # the trainer saves at the next step boundary and exits 143
            try:
                proc.wait(timeout=cfg["grace_s"])
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    run.update(exit_code=proc.returncode, wall_s=round(time.monotonic() - t0, 1), stopped_at_time_limit=stopped,
               finished=proc.returncode == 0)
    output = log_path.read_text(errors="replace")
    run["log_tail"] = _tail(output, 1500)
    from sfplus_lab.metrics import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval" and "val_loss" in r]
    tokens_per_step = cfg["batch_size"] * cfg["seq_len"]
    run["total_steps"] = math.ceil(cfg["tokens"] / tokens_per_step)
    if train:
        last = train[-1]
        run.update(steps=last["step"], tokens=last["tokens"], train_s=round(last["elapsed_s"], 2),
                   first_step_s=round(train[0]["elapsed_s"], 3))
        run["tok_per_s_overall"] = last["tokens"] / last["elapsed_s"] if last["elapsed_s"] > 0 else None
        steady = [r["tok_per_s"] for r in train if r["step"] > max(5, len(train) // 5)]
        run["tok_per_s_steady"] = statistics.median(steady) if steady else None
        run["skipped_steps"] = sum(1 for r in train if r.get("skipped"))
    if evals:
        run.update(first_val_loss=evals[0]["val_loss"], final_val_loss=evals[-1]["val_loss"],
                   final_val_step=evals[-1]["step"])
    if proc.returncode not in (0, 143) or not train:
        run["status"] = "error"
        run["error"] = f"sfplus train exited with {proc.returncode}" + ("" if train else " and logged no step")


# ---------------------------------------------------------------------------------------------- worker / parent


def worker(part: str, plan_path: Path, result_path: Path, deadline: float) -> int:
    """One part, in its own process; ``deadline`` (epoch seconds) is when the parent stops it."""
    plan = json.loads(plan_path.read_text())
    work = plan_path.parent
    res = Partial(result_path)
    if plan["mode"] == "tiny":
        import torch

        torch.set_num_threads(1)
    if part == "host_sync":
        part_host_sync(plan, res)
    elif part == "gpu_tests":
        part_gpu_tests(plan, res, work, deadline)
    elif part == "step_benchmark":
        part_step_benchmark(plan, res)
    elif part == "train":
        part_train(plan, res, work, deadline)
    else:
        raise SystemExit(f"unknown part {part}")
    res.save()
    return 0


def run_part(part: str, plan: dict[str, Any], work: Path, limit_s: float, log) -> dict[str, Any]:
    result_path = work / f"{part}.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", part, "--plan", str(work / "plan.json"),
           "--result", str(result_path), "--deadline", str(time.time() + limit_s)]
    t0 = time.monotonic()
    log.write(f"\n===== {part} (limit {limit_s:.0f} s) =====\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=REPO, env=_child_env(plan), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    timed_out = False
    try:
        proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the part's own process group (its pytest or sfplus children)
        proc.wait()
    log.flush()
    out: dict[str, Any] = {}
    if result_path.exists():
        with contextlib.suppress(Exception):
            out = json.loads(result_path.read_text())
    out["wall_s"] = round(time.monotonic() - t0, 1)
    out["limit_s"] = round(limit_s, 1)
    if timed_out:
        out.update(status="timeout", error=f"stopped at its time limit of {limit_s:.0f} s (results so far kept)")
    elif proc.returncode != 0:
        out.update(status="error", error=f"the part's process exited with {proc.returncode}; see the log tail",
                   log_tail=_log_section_tail(log.name, part))
    else:
        out["problems"] = problems(part, out)
        out["status"] = "failed" if out["problems"] else "ok"
    return out


def problems(part: str, out: dict[str, Any]) -> list[str]:
    """What went wrong inside a part that ran to its end (an item's error, a failed test, a fallback)."""
    found: list[str] = []
    if part == "host_sync":
        found += [f"{r['method']}: {r.get('error')}" for r in out.get("rows", []) if r.get("status") != "ok"]
    elif part == "gpu_tests":
        counts = out.get("counts") or {}
        if "counts" not in out:
            found.append("no test report was written")
        elif counts.get("failed") or counts.get("errors"):
            found.append(f"{counts['failed']} tests failed, {counts['errors']} errors")
    elif part == "step_benchmark":
        for dtype, d in (out.get("dtypes") or {}).items():
            if d.get("error"):
                found.append(f"{dtype}: {d['error']}")
            for r in d.get("rows", []):
                if r.get("status") == "error":
                    found.append(f"{dtype} {r['method']}: {r.get('error')}")
                elif r.get("note"):
                    found.append(f"{dtype} {r['method']}: {r['note']}")
    elif part == "train":
        found += [f"{name}: {r.get('error')}" for name, r in (out.get("runs") or {}).items() if r.get("status") != "ok"]
    return [p[:500] for p in found]


def _log_section_tail(log_name: str, part: str) -> str:
    with contextlib.suppress(Exception):
        text = Path(log_name).read_text(errors="replace")
        return _tail(text[text.rfind(f"===== {part} "):], 3000)
    return ""


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    from sfplus_lab.atomic import write_atomic  # main() put this checkout's src/ on the path

    write_atomic(out / "gpu_check.json", json.dumps(doc, indent=1, default=str) + "\n")
    try:
        text = render_markdown(doc)
    except Exception as exc:  # the summary must never cost the JSON or the parts still to run
        text = f"# GPU check\n\nThe summary could not be written ({_err(exc)}); every result is in gpu_check.json.\n"
    (out / "gpu_check.md").write_text(text)


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def render_markdown(doc: dict[str, Any]) -> str:
    env, parts = doc.get("environment", {}), doc.get("parts", {})
    lines = [f"# GPU check ({doc['mode']} form, device {doc['device']})", "",
             f"{doc.get('started_utc', '')}; torch {env.get('torch')}, GPU {env.get('gpu', 'none')}, "
             f"commit {str(env.get('git', {}).get('commit'))[:10]}, uncommitted in src/scripts: "
             f"{len(env.get('git', {}).get('uncommitted_in_src_or_scripts') or [])}; "
             f"wall {_fmt(doc.get('wall_s'), '.0f')} s of a {_fmt(doc['budget_s'], '.0f')} s budget.", ""]
    if doc["mode"] == "tiny":
        lines += ["**Tiny CPU form: the numbers check the script, they measure nothing.**", ""]
    lines += ["| part | status | wall s | error |", "|---|---|---|---|"]
    for name in PARTS:
        p = parts.get(name, {})
        error = p.get("error") or "; ".join(p.get("problems") or [])
        lines.append(f"| {name} | {p.get('status', 'not run')} | {_fmt(p.get('wall_s'), '.0f')} | "
                     f"{error.replace('|', '/')[:200]} |")
    t = parts.get("gpu_tests", {})
    if "counts" in t:
        c = t["counts"]
        lines += ["", f"## Tests (`pytest -m gpu`): {c['passed']} passed, {c['failed']} failed, {c['errors']} errors, "
                  f"{c['skipped']} skipped, of {c['total']}"]
        lines += [f"- FAILED {f['test']}: {f['message'][:200]}" for f in t.get("failures", [])]
    s = parts.get("step_benchmark", {})
    if s.get("dtypes"):
        lines += ["", f"## One optimizer step, {s.get('num_params', 0):,} parameters in "
                  f"{s.get('num_tensors')} tensors (median of {s.get('repeats')} after {s.get('warmup')} warmup)", "",
                  "| dtype | method | path | median ms | p25-p75 ms | x fused AdamW | status |",
                  "|---|---|---|---|---|---|---|"]
        for dtype, d in s["dtypes"].items():
            for r in d.get("rows", []):
                status = r.get("status", "")
                if status in ("unsupported", "not installed"):
                    status = r.get("reason", status)
                elif status != "ok":
                    status += ": " + (r.get("error") or "")[:90].replace("|", "/")
                elif r.get("note"):
                    status += ": " + r["note"]
                band = f"{_fmt(r.get('p25_ms'))}-{_fmt(r.get('p75_ms'))}" if "p25_ms" in r else ""
                lines.append(f"| {dtype} | {r['method']} | {r.get('path') or ''} | {_fmt(r.get('median_ms'))} | "
                             f"{band} | {_fmt(r.get('ratio_to_adamw_fused'))} | {status} |")
    h = parts.get("host_sync", {})
    if h.get("rows"):
        lines += ["", f"## Host sync in one step ({h.get('method', '')})", "",
                  "| method | path | syncs | count | where |", "|---|---|---|---|---|"]
        for r in h["rows"]:
            syncs = {True: "**syncs**", False: "no sync", None: r.get("status", "")}[r.get("syncs")]
            where = r.get("error_mode_where") or ", ".join((r.get("locations") or [])[:3])
            lines.append(f"| {r['method']} | {r.get('path') or ''} | {syncs} | {_fmt(r.get('sync_count'), 'd')} | "
                         f"{where or (r.get('error') or '')[:100]} |")
    if any(r.get("status") != "not run" for r in h.get("graph_capture", [])):
        lines += ["", "## CUDA graph capture of one step (capturable=True)", "",
                  "| method | captured | replay ms | note |", "|---|---|---|---|"]
        for r in h["graph_capture"]:
            captured = {True: "yes", False: "**no**"}.get(r.get("captured"), r.get("status", ""))
            note = r.get("reason") or r.get("capture_error") or r.get("error") or ""
            lines.append(f"| {r['method']} | {captured} | {_fmt(r.get('replay_median_ms'))} | "
                         f"{note[:150].replace('|', '/')} |")
    tr = parts.get("train", {})
    if tr.get("runs"):
        c = tr.get("config", {})
        lines += ["", f"## Training (`sfplus train`, model {c.get('model')}, {c.get('batch_size')}x{c.get('seq_len')} "
                  f"tokens/step, budget {_fmt(c.get('tokens'), ',d')} tokens, compile {c.get('compile')}; "
                  f"{tr.get('precision')})",
                  "",
                  "| optimizer | finished | steps | tok/s steady | tok/s overall | first step s | val loss (step) |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in tr["runs"].items():
            done = "yes" if r.get("finished") else ("stopped at time limit" if r.get("stopped_at_time_limit")
                                                   else r.get("status", ""))
            lines.append(f"| {name} | {done} | {r.get('steps', '')}/{r.get('total_steps', '')} | "
                         f"{_fmt(r.get('tok_per_s_steady'), ',.0f')} | {_fmt(r.get('tok_per_s_overall'), ',.0f')} | "
                         f"{_fmt(r.get('first_step_s'))} | {_fmt(r.get('final_val_loss'), '.4f')} "
                         f"({r.get('final_val_step', '')}) |")
    lines += ["", "What each number means: docs/gpu.md.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="The one-command GPU check: tests, step cost, host syncs, "
                                            "a short training run. Writes DIR/gpu_check.json and DIR/gpu_check.md.")
    p.add_argument("--out", type=Path, help="folder for gpu_check.json, gpu_check.md and gpu_check.log")
    p.add_argument("--tiny", action="store_true", help="the CPU form: tiny shapes, a few steps (what CI runs)")
    p.add_argument("--device", help="default: cuda, or cpu with --tiny")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    p.add_argument("--budget-s", type=float, help="whole-run time budget (default 480, tiny 150)")
    p.add_argument("--step-repeats", type=int, help="timed steps per method (default 20, tiny 3)")
    p.add_argument("--step-warmup", type=int, help="untimed steps per method first (default 5, tiny 2)")
    p.add_argument("--train-seconds", type=float, help="time limit of each training run (default 120, tiny 30)")
    p.add_argument("--train-tokens", type=int, help="token budget of each training run (default 16M, tiny 4096)")
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="train with --compile "
                   "(default on, off with --tiny)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed at the end)")
    # internal: one part in its own process
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    return p


def _install_note() -> str:
    from importlib.util import find_spec

    with contextlib.suppress(Exception):
        spec = find_spec("sfplus")
        if spec is not None and spec.origin and SRC in Path(spec.origin).resolve().parents:
            return f"sfplus: this checkout ({_short(spec.origin)})"
        where = spec.origin if spec is not None else "not installed"
        return (f"sfplus: {where}; this script runs this checkout's src/ regardless. To install it without a "
                f"package registry (nothing is downloaded): {INSTALL_HINT}")
    return f"sfplus: unknown; install with {INSTALL_HINT}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args.worker, args.plan, args.result, args.deadline or time.time() + 600)
    if args.out is None:
        build_parser().error("--out DIR is required")
    plan = make_plan(args)
    started = time.monotonic()
    install_note = _install_note()
    sys.path.insert(0, str(SRC))  # this checkout's library, installed or not (the parts' processes do the same)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.json").write_text(json.dumps(plan, indent=1))
    print(f"gpu_check: {plan['mode']} form on {plan['device']}, budget {plan['budget_s']:.0f} s; {install_note}")
    if plan["device"].startswith("cuda"):
        print("gpu_check: without a registry, install the project with:  " + INSTALL_HINT)
    doc: dict[str, Any] = {
        "schema": SCHEMA, "tool": "scripts/gpu_check.py", "mode": plan["mode"], "device": plan["device"],
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": plan["budget_s"],
        "command": "python scripts/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "install": INSTALL_HINT, "plan": plan, "parts": {},
    }
    try:
        doc["environment"] = environment()
    except Exception as exc:
        doc["environment"] = {"error": _err(exc)}
    env = doc["environment"]
    if plan["device"].startswith("cuda") and not env.get("cuda_available"):
        print("gpu_check: CUDA is not available here: every part will fail; use --tiny for the CPU form")
    write_outputs(doc, out)
    with open(out / "gpu_check.log", "w") as log:
        for i, part in enumerate(PARTS):
            if part not in args.parts:
                doc["parts"][part] = {"status": "not asked", "error": "left out by --parts"}
                continue
            left = plan["budget_s"] - (time.monotonic() - started)
            later = [q for q in PARTS[i + 1:] if q in args.parts]
            reserve = sum(plan["min_s"][q] for q in later)
            limit = min(plan["caps_s"][part], left - reserve)
            if limit < 10:
                doc["parts"][part] = {"status": "skipped", "error": f"no time left in the budget ({left:.0f} s)"}
                continue
            print(f"gpu_check: {part} (at most {limit:.0f} s) ...", flush=True)
            try:
                doc["parts"][part] = run_part(part, plan, work, limit, log)
            except Exception as exc:
                doc["parts"][part] = {"status": "error", "error": _err(exc)}
            print(f"gpu_check: {part}: {doc['parts'][part]['status']} in {doc['parts'][part].get('wall_s', '?')} s",
                  flush=True)
            doc["wall_s"] = round(time.monotonic() - started, 1)
            write_outputs(doc, out)
    doc["wall_s"] = round(time.monotonic() - started, 1)
    statuses = {p: r.get("status") for p, r in doc["parts"].items()}
    doc["summary"] = {"parts_ok": [p for p, s in statuses.items() if s == "ok"],
                      "parts_not_ok": {p: s for p, s in statuses.items() if s not in ("ok", "not asked")}}
    write_outputs(doc, out)
    if args.work is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print((out / "gpu_check.md").read_text())
    print(f"gpu_check: wrote {out / 'gpu_check.json'}, {out / 'gpu_check.md'} and {out / 'gpu_check.log'}")
    return 1 if doc["summary"]["parts_not_ok"] else 0  # every part's result is in the JSON either way


if __name__ == "__main__":
    sys.exit(main())
