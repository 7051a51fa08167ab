"""get_batch / eval_batches: pure functions of their arguments, deterministic across processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from sfplus_lab.data import eval_batches, get_batch, num_eval_windows
from sfplus_lab.errors import UserError


@pytest.fixture
def tokens() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=5000).astype(np.uint16)


def test_shapes_types_and_shift(tokens: np.ndarray) -> None:
    x, y = get_batch(tokens, batch_size=8, seq_len=32, seed=0, step=0)
    assert x.shape == y.shape == (8, 32)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    # every row is a real window of the text, and y is its continuation
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        starts = np.flatnonzero(tokens[: len(tokens) - 32] == row_x[0])
        assert any(np.array_equal(tokens[s : s + 32], row_x) and np.array_equal(tokens[s + 1 : s + 33], row_y)
                   for s in starts)


def test_pure_function_of_arguments(tokens: np.ndarray) -> None:
    kw = dict(batch_size=4, seq_len=16, seed=3)
    a = get_batch(tokens, step=5, **kw)
    get_batch(tokens, step=6, **kw)  # an unrelated call in between must not matter
    torch.manual_seed(123)  # nor the global RNG
    b = get_batch(tokens, step=5, **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("change", [{"step": 1}, {"seed": 1}, {"rank": 1, "world_size": 2}])
def test_different_step_seed_rank_give_different_data(tokens: np.ndarray, change: dict) -> None:
    base = dict(batch_size=4, seq_len=16, seed=0, step=0, rank=0, world_size=2)
    a, _ = get_batch(tokens, **base)
    b, _ = get_batch(tokens, **{**base, **change})
    assert not torch.equal(a, b)


def test_same_batch_in_another_process(tokens: np.ndarray) -> None:
    code = (
        "import numpy as np, sys; from sfplus_lab.data import get_batch\n"
        "t = np.random.default_rng(0).integers(0, 256, size=5000).astype(np.uint16)\n"
        "x, y = get_batch(t, batch_size=3, seq_len=8, seed=7, step=11, rank=1, world_size=4)\n"
        "print(','.join(map(str, x.flatten().tolist())))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    x, _ = get_batch(tokens, batch_size=3, seq_len=8, seed=7, step=11, rank=1, world_size=4)
    assert out == ",".join(map(str, x.flatten().tolist()))


def test_memmap_input_gives_same_batch(tokens: np.ndarray, tmp_path) -> None:
    tokens.tofile(tmp_path / "t.bin")
    mm = np.memmap(tmp_path / "t.bin", dtype=np.uint16, mode="r")
    a, _ = get_batch(tokens, batch_size=2, seq_len=10, seed=1, step=2)
    b, _ = get_batch(mm, batch_size=2, seq_len=10, seed=1, step=2)
    assert torch.equal(a, b)


def test_too_short_text_is_a_user_error() -> None:
    with pytest.raises(UserError, match="fewer than seq_len"):
        get_batch(np.zeros(10, dtype=np.uint16), batch_size=1, seq_len=10, seed=0, step=0)
    get_batch(np.zeros(11, dtype=np.uint16), batch_size=1, seq_len=10, seed=0, step=0)  # exactly enough


def test_bad_rank_raises(tokens: np.ndarray) -> None:
    with pytest.raises(ValueError, match="rank"):
        get_batch(tokens, batch_size=1, seq_len=4, seed=0, step=0, rank=2, world_size=2)


def test_eval_batches_cover_fixed_non_overlapping_windows() -> None:
    t = np.arange(101, dtype=np.uint16)
    batches = list(eval_batches(t, batch_size=3, seq_len=10))
    assert num_eval_windows(t, 10) == 10
    assert [b[0].shape[0] for b in batches] == [3, 3, 3, 1]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(x.flatten(), torch.arange(100))
    assert torch.equal(y.flatten(), torch.arange(1, 101))


def test_eval_batches_capped_spread_over_the_text() -> None:
    t = np.arange(1001, dtype=np.uint16)
    batches = list(eval_batches(t, batch_size=2, seq_len=10, max_batches=2))
    starts = torch.cat([b[0][:, 0] for b in batches]).tolist()
    assert len(starts) == 4 and starts[0] == 0 and starts[-1] == 990  # first and last window both scored
    assert starts == sorted(set(starts))


def test_eval_batches_ranks_partition_the_batches() -> None:
    t = np.arange(501, dtype=np.uint16)
    full = [b[0] for b in eval_batches(t, 4, 10)]
    split = [[b[0] for b in eval_batches(t, 4, 10, rank=r, world_size=2)] for r in range(2)]
    assert len(split[0]) + len(split[1]) == len(full)
    assert torch.equal(torch.cat(split[0] + split[1]).sort(0).values, torch.cat(full).sort(0).values)


def test_eval_batches_short_text_is_one_shorter_window() -> None:
    t = np.arange(5, dtype=np.uint16)
    (x, y), = list(eval_batches(t, batch_size=4, seq_len=64))
    assert x.tolist() == [[0, 1, 2, 3]] and y.tolist() == [[1, 2, 3, 4]]
    with pytest.raises(UserError, match="fewer than seq_len"):
        list(eval_batches(np.zeros(1, dtype=np.uint16), batch_size=4, seq_len=64))
