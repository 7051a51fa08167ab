"""The bench picks a tuned baseline's learning rate on seed 0 and reports the mean over every seed at it; the
held-out mean leaves out the seed that made the choice (an optimistic draw: the sweep's minimum)."""

from __future__ import annotations

import math

import pytest

from sfplus_lab.bench.analysis import format_summary, summarize
from sfplus_lab.bench.config import quick_config


def _record(method: str, k: int | None, seed: int, loss: float) -> dict:
    run_id = f"3k_{method}_k{k}_s{seed}"
    final = {"pooled": loss, "diverged": not math.isfinite(loss), "per_source": {"a": loss}}
    return {"job": {"id": run_id, "size": "3k", "method": method, "k": k, "seed": seed},
            "num_params": 3096, "finals": {"1": final}, "curve": [], "horizon_steps": 10, "trace": {},
            "steps": {"1": 10}}  # fmt: skip


@pytest.fixture
def doc() -> dict:
    cfg = quick_config(sizes=("3k",), budgets=(1.0,), baselines=("adamw-cosine",), sfplus_extra=(), seeds=3,
                       lr_grid=(2, 3), eval_tokens=512)  # fmt: skip
    recs = [
        _record("adamw-cosine", 2, 0, 2.0),
        _record("adamw-cosine", 3, 0, 1.5),  # seed 0 picks k = 3 with its lucky 1.5
        _record("adamw-cosine", 3, 1, 1.9),
        _record("adamw-cosine", 3, 2, 2.1),
        _record("adamw-cosine", 2, 1, 0.1),  # a seed at the rejected LR: in neither mean
        _record("sfplus", None, 0, 1.8),
        _record("sfplus", None, 1, 1.6),
    ]
    return {"sizes": summarize(cfg, {r["job"]["id"]: r for r in recs})}


def test_heldout_mean_leaves_out_the_seed_that_picked_the_lr(doc: dict) -> None:
    cells = {c["method"]: c for c in doc["sizes"]["3k"]["cells"]}
    cos = cells["adamw-cosine"]
    assert cos["best_k"] == 3 and cos["seeds"] == [0, 1, 2]
    assert cos["final_pooled_mean"] == pytest.approx((1.5 + 1.9 + 2.1) / 3)
    assert cos["final_heldout_mean"] == pytest.approx(2.0) and cos["heldout_seeds"] == 2
    # a fixed configuration picks nothing: no held-out mean
    assert cells["sfplus"]["final_heldout_mean"] is None and cells["sfplus"]["heldout_seeds"] == 0
    text = format_summary(doc)
    assert "| 2.0000 (n=2) |" in text


def test_summary_of_an_older_results_file_has_an_empty_heldout_column(doc: dict) -> None:
    for cell in doc["sizes"]["3k"]["cells"]:
        del cell["final_heldout_mean"], cell["heldout_seeds"]
    rows = [line for line in format_summary(doc).splitlines() if line.startswith("| 1 | adamw-cosine |")]
    assert rows and rows[0].endswith("|  |")
