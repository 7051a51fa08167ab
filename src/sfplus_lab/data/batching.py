"""Batches as pure functions of their coordinates, so a resumed run needs only its step to continue exactly.

``get_batch`` draws random windows from a ``torch.Generator`` seeded by hashing (seed, step, rank): no sampler
state to checkpoint, identical across processes and machines, and different for every rank. ``eval_batches``
walks fixed non-overlapping windows, so every evaluation of a run scores the same text.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

import numpy as np
import torch

from ..errors import UserError

__all__ = ["batch_seed", "eval_batches", "get_batch", "num_eval_windows"]


def batch_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit generator seed from (seed, step, rank); hashed so that nearby triples give unrelated streams."""
    digest = hashlib.blake2b(struct.pack("<qqq", seed, step, rank), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _check_shape(tokens: np.ndarray, batch_size: int, seq_len: int) -> None:
    if batch_size < 1 or seq_len < 1:
        raise UserError(f"batch_size and seq_len must be >= 1, got batch_size={batch_size}, seq_len={seq_len}")
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array, got shape {tokens.shape}")
    if len(tokens) < seq_len + 1:
        raise UserError(f"the text has {len(tokens)} tokens, fewer than seq_len+1 = {seq_len + 1}; "
                        "use more text or a shorter sequence length")


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for windows beginning at ``starts``, as int64 tensors."""
    idx = starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]
    chunk = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


def get_batch(
    tokens: np.ndarray,
    *,
    batch_size: int,
    seq_len: int,
    seed: int,
    step: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training windows ``(x, y)``, each int64 of shape (batch_size, seq_len), with ``y`` = ``x`` shifted by one.

    A pure function of its arguments: the same call returns the same batch in any process; a different ``step``
    or ``rank`` gives a different one. Windows may overlap and start anywhere in ``tokens``.
    """
    _check_shape(tokens, batch_size, seq_len)
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    gen = torch.Generator().manual_seed(batch_seed(seed, step, rank))
    starts = torch.randint(0, len(tokens) - seq_len, (batch_size,), generator=gen).numpy().astype(np.int64)
    return _windows(tokens, starts, seq_len)


def num_eval_windows(tokens: np.ndarray, seq_len: int) -> int:
    """How many non-overlapping (seq_len+1)-token windows :func:`eval_batches` can take from ``tokens``."""
    return max(0, (len(tokens) - 1) // seq_len)


def eval_batches(
    tokens: np.ndarray,
    batch_size: int,
    seq_len: int,
    max_batches: int | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic evaluation batches of fixed, non-overlapping windows (window i starts at i*seq_len).

    With ``max_batches`` set and more windows than fit, the windows kept are spread evenly over the whole
    text rather than taken from its start, so a capped evaluation still sees every part of the split.
    The last batch may be smaller. With ``world_size > 1`` rank r gets batches r, r+world_size, ...
    A text of at most ``seq_len`` tokens (the validation tail of a small file) gives one shorter window
    rather than an error, so small user files still get a validation loss.
    """
    if 2 <= len(tokens) <= seq_len:
        seq_len = len(tokens) - 1  # a validation text shorter than one window is scored as one shorter window
    _check_shape(tokens, batch_size, seq_len)
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    total = num_eval_windows(tokens, seq_len)
    chosen = np.arange(total, dtype=np.int64)
    if max_batches is not None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
        keep = max_batches * batch_size
        if keep < total:
            chosen = np.unique(np.linspace(0, total - 1, keep).round().astype(np.int64))
    for b, first in enumerate(range(0, len(chosen), batch_size)):
        if b % world_size == rank:
            yield _windows(tokens, chosen[first : first + batch_size] * seq_len, seq_len)
