"""benchmarks/seed_swap.py trains a job with its own initialisation and another seed's batches, and puts the
runner back as it was."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import seed_swap  # noqa: E402

from sfplus_lab.bench import runner  # noqa: E402
from sfplus_lab.data import get_batch  # noqa: E402


def test_a_pair_is_init_then_data() -> None:
    assert seed_swap.parse_pair("2:0") == (2, 0)
    assert seed_swap.parse_pair("10:3") == (10, 3)


@pytest.mark.parametrize("text", ["2", "a:1", "1:", "-1:2", "1:2:3"])
def test_a_malformed_pair_is_refused_with_the_text(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="INIT:DATA|>= 0"):
        seed_swap.parse_pair(text)


def test_inside_the_block_the_runner_gets_the_data_seeds_batches_and_after_it_its_own() -> None:
    tokens = np.arange(5000, dtype=np.int64) % 251
    kw = dict(batch_size=4, seq_len=16, step=3)
    own, other = get_batch(tokens, seed=2, **kw), get_batch(tokens, seed=0, **kw)
    assert not torch.equal(own[0], other[0])
    with seed_swap.data_seed(0):
        x, y = runner.get_batch(tokens, seed=2, **kw)
    assert torch.equal(x, other[0]) and torch.equal(y, other[1])
    assert runner.get_batch is get_batch
    assert torch.equal(runner.get_batch(tokens, seed=2, **kw)[0], own[0])


def test_the_runner_is_restored_when_the_run_fails() -> None:
    with pytest.raises(RuntimeError), seed_swap.data_seed(1):
        raise RuntimeError("a failed run")
    assert runner.get_batch is get_batch


def test_an_unknown_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        seed_swap.main([str(tmp_path / "results.json"), "--configs", "nope", "--pairs", "0:1", "--out", str(tmp_path)])
