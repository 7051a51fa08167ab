"""benchmarks/baseline_seeds.py rebuilds a baseline run's job from its id with another seed, and refuses ids it
cannot rebuild exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import baseline_seeds  # noqa: E402


@pytest.mark.parametrize(
    "run_id",
    ["6k_adamw-cosine_lr0.064_s1_decay_b1000_h1000", "100k_adamw-wsd_lr0.004_s1_wsd_b20-100_h100",
     "20k_sf-adamw_lr0.016_s0_anytime_b20-100-1000_h1000"],
)  # fmt: skip
def test_the_job_of_an_id_with_another_seed_has_that_id_with_the_seed_changed(run_id: str) -> None:
    job = baseline_seeds.job_for(run_id, 7, k=3)
    assert job.id == run_id.replace(run_id.split("_")[3], "s7")
    assert job.seed == 7 and job.k == 3 and job.phase == "seed"


@pytest.mark.parametrize("run_id", ["6k_sfplus_default_s0_anytime_b20-100-1000_h1250", "garbage"])
def test_an_id_that_is_not_a_baseline_run_is_refused(run_id: str) -> None:
    with pytest.raises(SystemExit):
        baseline_seeds.job_for(run_id, 2, k=None)


def test_the_files_own_seeds_come_from_the_cells_of_that_job_only() -> None:
    doc = {"sizes": {"6k": {"cells": [
        {"budget": 1000.0, "best_k": 6, "run_ids": ["6k_adamw-cosine_lr0.064_s0_decay_b1000_h1000",
                                                    "6k_adamw-cosine_lr0.064_s1_decay_b1000_h1000"],
         "final_pooled": [1.9, 1.8]},
        {"budget": 100.0, "best_k": 5, "run_ids": ["6k_adamw-cosine_lr0.032_s0_decay_b100_h100"],
         "final_pooled": [2.3]},
    ]}}}  # fmt: skip
    k, finals = baseline_seeds.file_finals(doc, "6k_adamw-cosine_lr0.064_s1_decay_b1000_h1000")
    assert k == 6 and finals == {"1000": {0: 1.9, 1: 1.8}}
