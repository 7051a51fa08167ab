"""Tokenizers for the lab: bytes (the default, vocab 256) and a BPE trained locally with ``tokenizers``.

Why two: byte-level needs nothing, never fails on any text and makes runs comparable across corpora; BPE gives
shorter sequences (more text per token budget) once the corpus is large. Both serialise to a JSON-able dict
(``to_dict`` / :func:`tokenizer_from_dict`) so configs and checkpoints can rebuild the exact tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import UserError

__all__ = ["BPETokenizer", "ByteTokenizer", "Tokenizer", "tokenizer_from_dict"]


class Tokenizer(Protocol):
    """What the lab needs from a tokenizer."""

    name: str
    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0..255); decoding replaces invalid byte sequences with U+FFFD."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"name": "byte", "vocab_size": 256}

    def fingerprint(self) -> str:
        """A short stable id, part of the token cache key."""
        return "byte"


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ModuleNotFoundError as exc:
        raise UserError(
            "tokenizer 'bpe' needs the 'tokenizers' package: pip install tokenizers (or use --tokenizer byte)"
        ) from exc
    return tokenizers


class BPETokenizer:
    """A byte-level BPE (``tokenizers`` library) trained on the corpus's training split only.

    Training only on the training split keeps validation text unseen by every learned component.
    """

    name = "bpe"

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.vocab_size = int(backend.get_vocab_size())

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int) -> BPETokenizer:
        """Train a byte-level BPE with ``vocab_size`` tokens (256 byte tokens included) on ``texts``."""
        if not 257 <= vocab_size <= 65535:
            raise UserError(f"BPE vocab size must be between 257 and 65535 (uint16 tokens), got {vocab_size}")
        tk = _import_tokenizers()
        backend = tk.Tokenizer(tk.models.BPE())
        backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._backend.encode(text).ids, dtype=np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        return str(self._backend.decode([int(i) for i in ids]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": "bpe", "vocab_size": self.vocab_size, "json": self._backend.to_str()}

    def fingerprint(self) -> str:
        return "bpe-" + hashlib.sha256(self._backend.to_str().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        tk = _import_tokenizers()
        return cls(tk.Tokenizer.from_str(text))


def tokenizer_from_dict(d: dict[str, Any]) -> ByteTokenizer | BPETokenizer:
    """Rebuild a tokenizer from :meth:`to_dict` output (e.g. from a run's config.json or a checkpoint)."""
    name = d.get("name")
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        if "json" not in d:
            raise UserError("a 'bpe' tokenizer description must hold its 'json' (tokenizers' serialisation)")
        tok = BPETokenizer.from_json(d["json"] if isinstance(d["json"], str) else json.dumps(d["json"]))
        return tok
    raise UserError(f"unknown tokenizer {name!r}; expected 'byte' or 'bpe'")
