"""The lab's data: built-in and fetched public-domain text, user files, tokenizers and batches.

``load_corpus`` turns text into cached token arrays; ``get_batch`` / ``eval_batches`` cut them into batches
as pure functions of (seed, step, rank), so resuming a run needs no sampler state.
"""

from .batching import batch_seed, eval_batches, get_batch, num_eval_windows
from .corpus import VAL_FRACTION, Corpus, default_cache_dir, evaluable_sources, load_corpus
from .tokenizer import BPETokenizer, ByteTokenizer, tokenizer_from_dict

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "Corpus",
    "VAL_FRACTION",
    "batch_seed",
    "default_cache_dir",
    "eval_batches",
    "evaluable_sources",
    "get_batch",
    "load_corpus",
    "num_eval_windows",
    "tokenizer_from_dict",
]
