"""scripts/gpu_check.py: its CPU form runs every part and writes the documented JSON.

The CUDA form cannot run here; what can be checked without a GPU is checked: the tiny form end to end in
a subprocess (as CI and a user run it), and the CUDA host-sync logic against a fake sync-debug mode.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"
SFPLUS_PATHS = ("sfplus-forloop", "sfplus-foreach", "sfplus-fused", "sfplus-default")


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    return proc, out


def test_tiny_form_runs_every_part_and_exits_zero(tiny):
    proc, out = tiny
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    assert (doc["schema"], doc["mode"], doc["device"]) == (1, "tiny", "cpu")
    assert list(doc["parts"]) == ["host_sync", "gpu_tests", "step_benchmark", "train"]
    for name, part in doc["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("problems"))
        assert part["wall_s"] <= part["limit_s"] + 5
    assert doc["summary"]["parts_not_ok"] == {}
    assert doc["environment"]["torch"] == torch.__version__
    assert doc["environment"]["sfplus_from_this_checkout"] is True
    md = (out / "gpu_check.md").read_text()
    for heading in ("Tests (`pytest -m gpu`)", "One optimizer step", "Host sync", "Training"):
        assert heading in md
    assert (out / "gpu_check.log").exists()
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]


def test_tiny_gpu_tests_part_counts_the_marked_tests(tiny):
    part = json.loads((tiny[1] / "gpu_check.json").read_text())["parts"]["gpu_tests"]
    c = part["counts"]
    assert c["total"] >= 4 and c["total"] == c["passed"] + c["failed"] + c["errors"] + c["skipped"]
    assert "tests/optim/test_gpu.py" in part["files"]
    if not torch.cuda.is_available():
        assert c["skipped"] == c["total"]


def test_tiny_step_benchmark_has_every_method_in_both_dtypes(tiny):
    part = json.loads((tiny[1] / "gpu_check.json").read_text())["parts"]["step_benchmark"]
    assert 1_000 < part["num_params"] < 20_000 and part["num_tensors"] == 28
    assert list(part["dtypes"]) == ["fp32", "bf16"]
    for dtype in part["dtypes"].values():
        rows = {r["method"]: r for r in dtype["rows"]}
        assert rows["adamw-fused"]["ratio_to_adamw_fused"] == 1.0
        assert rows["sf-adamw"]["status"] in ("ok", "not installed")
        for name in SFPLUS_PATHS:
            row = rows[name]
            assert row["status"] == "ok" and row["median_ms"] > 0 and row["timed_steps"] == part["repeats"]
            assert math.isfinite(row["ratio_to_adamw_fused"]) and row["skipped_steps"] == 0
        assert {rows[n]["path"] for n in ("sfplus-forloop", "sfplus-foreach", "sfplus-fused")} == {
            "single", "foreach", "fused"}
        for base in ("adamw-fused", "sf-adamw", *SFPLUS_PATHS):  # every method is tried with capturable=True
            assert rows[f"{base}+capturable"]["status"] in ("ok", "unsupported", "not installed", "error")


def test_tiny_host_sync_part_gives_a_verdict_per_path(tiny):
    part = json.loads((tiny[1] / "gpu_check.json").read_text())["parts"]["host_sync"]
    rows = {r["method"]: r for r in part["rows"]}
    for name in SFPLUS_PATHS:  # a verdict either way: the library is changing to make it "no sync"
        row = rows[name]
        assert row["status"] == "ok" and row["syncs"] == (row["sync_count"] > 0)
        assert row["sync_count"] >= len(row["locations"])
    assert rows["adamw-fused (reference)"]["syncs"] is False
    graph = {r["method"]: r for r in part["graph_capture"]}  # CUDA graphs: every method has a row
    assert set(graph) == {f"{name}+capturable" for name in rows}
    if not torch.cuda.is_available():
        assert {r["status"] for r in graph.values()} == {"not run"}


def test_tiny_train_part_trains_both_optimizers(tiny):
    part = json.loads((tiny[1] / "gpu_check.json").read_text())["parts"]["train"]
    assert set(part["runs"]) == {"sfplus", "adamw-cosine"}
    for run in part["runs"].values():
        assert run["finished"] and run["steps"] == run["total_steps"] and run["tok_per_s_overall"] > 0
        assert run["final_val_loss"] < run["first_val_loss"]


def test_cuda_sync_check_logic_with_a_fake_sync_debug_mode(monkeypatch):
    """The CUDA branch, which cannot run here: a step that reads to the host is reported, not raised."""
    gc = _load_script()
    mode = {"now": "default"}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda m: mode.update(now=m))

    def syncing_step():  # what torch does on a device-to-host read under each mode
        if mode["now"] == "warn":
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        elif mode["now"] == "error":
            raise RuntimeError("called a synchronizing CUDA operation")

    row: dict = {}
    gc._cuda_sync_check(syncing_step, row)
    assert row["syncs"] is True and row["sync_count"] == 1 and "synchronizing" in row["error_mode_message"]
    assert mode["now"] == "default"
    row = {}
    gc._cuda_sync_check(lambda: None, row)
    assert row == {"sync_count": 0, "locations": [], "syncs": False} and mode["now"] == "default"


def test_host_read_proxy_records_and_restores():
    gc = _load_script()
    before = {name: torch.Tensor.__dict__.get(name) for name in gc._HOST_READS}
    with gc._record_host_reads() as calls:
        torch.ones(2).sum().item()
        torch.ones(2).tolist()
    assert [c.split("()")[0] for c in calls] == ["item", "tolist"]
    assert {name: torch.Tensor.__dict__.get(name) for name in gc._HOST_READS} == before
