"""``load_corpus``: text sources -> tokenizer + contiguous train/validation token arrays, cached as memmaps.

Every source (a file, a folder, a built-in or fetched text) is split contiguously: its last 5% (cut at a line
boundary) is validation, the rest training. Contiguous, not random, so validation text is never a shuffled
neighbour of training text. Validation stays per source so a mostly-biblical corpus still reports how the
model does on prose; training concatenates all sources.

Token arrays are cached under ``<cache_dir>/tokens/<key>/`` where the key hashes the tokenizer request, the
split and every source's sha256; a cache entry is written aside and renamed into place, so a crash never
leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_dir
from ..errors import UserError
from .cleaning import clean_text
from .tokenizer import BPETokenizer, ByteTokenizer, tokenizer_from_dict

__all__ = [
    "Corpus", "Source", "default_cache_dir", "evaluable_sources", "load_corpus", "read_text_file", "split_text",
    "VAL_FRACTION",
]

VAL_FRACTION = 0.05
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
_CACHE_VERSION = 1
_BUILTIN_NAMES = ("austen-persuasion", "melville-mobydick")


@dataclass(slots=True)
class Source:
    """One named text; ``origin`` says where it came from (a path, 'builtin', or a Debian package)."""

    name: str
    text: str
    origin: str
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Corpus:
    """Tokens ready for training: ``train`` (all sources concatenated) and ``val`` (per source)."""

    name: str
    tokenizer: ByteTokenizer | BPETokenizer
    vocab_size: int
    train: np.ndarray
    val: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def evaluable_sources(corpus: Corpus, seq_len: int) -> dict[str, np.ndarray]:
    """The validation sources long enough for one window of ``seq_len``; a UserError, before any training,
    when the training text or every validation split is too short for one window (seq_len + 1 tokens)."""
    need = seq_len + 1
    if len(corpus.train) < need:
        raise UserError(f"corpus {corpus.name} has {len(corpus.train)} training tokens; one training window needs "
                        f"seq_len+1 = {need}: use more text or a smaller --seq-len")
    sources = {name: tokens for name, tokens in corpus.val.items() if len(tokens) >= need}
    if not sources:
        sizes = ", ".join(f"{name} {len(tokens)}" for name, tokens in corpus.val.items())
        raise UserError(f"no validation text long enough: every source's validation split ({sizes} tokens) is "
                        f"shorter than seq_len+1 = {need}; use more text or a smaller --seq-len")
    return sources


def default_cache_dir() -> Path:
    """``$SFPLUS_CACHE`` if set, else ``~/.cache/sfplus``."""
    env = os.environ.get("SFPLUS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sfplus"


def read_text_file(path: Path) -> str:
    """Read one user text file as UTF-8; anything missing, empty, binary or undecodable is a UserError."""
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    if not path.is_file():
        raise UserError(f"not a regular file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read data file {path}: {exc.strerror or exc}") from exc
    if b"\x00" in raw[:65536]:
        raise UserError(f"data file {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"data file {path} is not UTF-8 text (bad byte at offset {exc.start})") from exc
    text = clean_text(text)
    if not text.strip():
        raise UserError(f"data file {path} is empty")
    return text


def _folder_source(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise UserError(f"data folder {folder} has no text files ({', '.join(TEXT_SUFFIXES)})")
    return "\n".join(read_text_file(p) for p in files)


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}-{i}", i + 1
    taken.add(candidate)
    return candidate


def path_sources(paths: list[str]) -> list[Source]:
    """Each file is one source, each folder one source (its text files concatenated in sorted order)."""
    sources: list[Source] = []
    taken: set[str] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            text = _folder_source(path)
        elif path.exists() or not path.is_symlink():
            text = read_text_file(path)
        else:
            raise UserError(f"data file not found: {path} (a broken link)")
        resolved = path.resolve()
        # "persuasion.txt" -> "persuasion", but "Apache-2.0" stays whole (only a text suffix is dropped)
        stem = resolved.stem if resolved.is_file() and resolved.suffix.lower() in TEXT_SUFFIXES else resolved.name
        name = _unique_name(stem.strip(".") or "text", taken)
        sources.append(Source(name=name, text=text, origin=str(path.resolve())))
    return sources


def builtin_sources() -> list[Source]:
    """The public-domain texts shipped in the package (see ``builtin/README.md`` for provenance)."""
    folder = resources.files("sfplus_lab.data") / "builtin"
    out = []
    for name in _BUILTIN_NAMES:
        text = gzip.decompress((folder / f"{name}.txt.gz").read_bytes()).decode("utf-8")
        out.append(Source(name=name, text=text, origin="builtin"))
    return out


def split_text(text: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """Contiguous split: the last ``val_fraction`` of the text, moved forward to the next line start."""
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut)
    if 0 <= newline < len(text) - 1:
        cut = newline + 1
    if cut <= 0 or cut >= len(text):
        raise UserError(f"text of {len(text)} characters is too short to split into training and validation")
    return text[:cut], text[cut:]


def _resolve_sources(paths: list[str] | None, cache_dir: Path) -> tuple[str, list[Source]]:
    if paths is None or list(paths) == ["builtin"]:
        return "builtin", builtin_sources()
    if not paths:
        raise UserError("no data given: name at least one text file or folder")
    if list(paths) == ["debian"]:
        from .debian import debian_sources  # local import: only the fetched corpus needs it

        return "debian", debian_sources(cache_dir)
    if "debian" in paths or "builtin" in paths:
        raise UserError("'debian' and 'builtin' name whole corpora and cannot be mixed with files "
                        "(write ./debian for a folder of that name)")
    sources = path_sources(list(paths))
    return "+".join(s.name for s in sources)[:80], sources


def _cache_key(sources: list[Source], tokenizer: str, vocab_size: int | None) -> str:
    spec = {"v": _CACHE_VERSION, "tokenizer": tokenizer, "vocab_size": vocab_size, "val_fraction": VAL_FRACTION,
            "sources": [[s.name, s.sha256] for s in sources]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _build_tokenizer(kind: str, train_texts: list[str], vocab_size: int | None) -> ByteTokenizer | BPETokenizer:
    if kind == "byte":
        if vocab_size not in (None, 256):
            raise UserError(f"the byte tokenizer has vocab size 256, not {vocab_size}")
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.train(train_texts, vocab_size or 4096)
    raise UserError(f"unknown tokenizer {kind!r}; expected 'byte' or 'bpe'")


def _tokenize(sources: list[Source], kind: str, vocab_size: int | None) -> tuple[Any, np.ndarray, dict, list]:
    splits = [split_text(s.text) for s in sources]
    tok = _build_tokenizer(kind, [train for train, _ in splits], vocab_size)
    trains = [tok.encode(train) for train, _ in splits]
    val = {s.name: tok.encode(v) for s, (_, v) in zip(sources, splits)}
    stats = [{"name": s.name, "origin": s.origin, "sha256": s.sha256, "chars": len(s.text),
              "train_tokens": int(len(t)), "val_tokens": int(len(val[s.name]))} for s, t in zip(sources, trains)]
    return tok, np.concatenate(trains).astype(np.uint16), val, stats


def _write_entry(entry: Path, tok: Any, train: np.ndarray, val: dict[str, np.ndarray], meta: dict) -> None:
    """Write a cache entry aside, then rename it into place (atomic: readers see all of it or none)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_dir(entry) as tmp:
            train.tofile(tmp / "train.bin")
            for i, name in enumerate(val):
                val[name].astype(np.uint16).tofile(tmp / f"val_{i}.bin")
            (tmp / "tokenizer.json").write_text(json.dumps(tok.to_dict()))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    except OSError:
        if not (entry / "meta.json").exists():  # (another process may have put the same entry in place first)
            raise


def _discard(entry: Path) -> None:
    """Move a damaged entry aside and delete it; a process that still maps its files keeps reading them."""
    aside = entry.with_name(f".{entry.name}.stale-{os.getpid()}")
    try:
        os.replace(entry, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _read_entry(entry: Path) -> Corpus | None:
    """Open a complete cache entry as memmaps; ``None`` if there is none or it is unreadable."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        tok = tokenizer_from_dict(json.loads((entry / "tokenizer.json").read_text()))
        train = np.memmap(entry / "train.bin", dtype=np.uint16, mode="r")
        val = {s["name"]: np.memmap(entry / f"val_{i}.bin", dtype=np.uint16, mode="r")
               for i, s in enumerate(meta["sources"])}
    except (OSError, ValueError, KeyError):
        return None
    if len(train) != meta["train_tokens"] or any(len(val[s["name"]]) != s["val_tokens"] for s in meta["sources"]):
        return None
    return Corpus(meta["name"], tok, tok.vocab_size, train, val, meta)


def load_corpus(
    paths: list[str] | None = None,
    *,
    tokenizer: str = "byte",
    cache_dir: str | None = None,
    vocab_size: int | None = None,
) -> Corpus:
    """Load text, tokenise it and split it per source into train/validation token arrays.

    Args:
        paths: ``None`` (or ``["builtin"]``) for the small public-domain texts shipped in the package;
            ``["debian"]`` for the corpus built by ``sfplus data fetch``; otherwise text files and folders
            (each one source).
        tokenizer: ``"byte"`` (vocab 256, default) or ``"bpe"`` (trained on the training split; needs the
            ``tokenizers`` package).
        cache_dir: where tokens (and the fetched corpus) are cached; default ``$SFPLUS_CACHE`` or ``~/.cache/sfplus``.
        vocab_size: BPE vocabulary size (default 4096); must be 256 or None for bytes.
    """
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    name, sources = _resolve_sources(paths, cache)
    if tokenizer not in ("byte", "bpe"):
        raise UserError(f"unknown tokenizer {tokenizer!r}; expected 'byte' or 'bpe'")
    entry = cache / "tokens" / _cache_key(sources, tokenizer, vocab_size)
    cached = _read_entry(entry)
    if cached is not None:
        cached.name = name
        return cached
    if entry.exists():
        _discard(entry)  # unreadable or damaged: rebuild it
    tok, train, val, stats = _tokenize(sources, tokenizer, vocab_size)
    meta = {"name": name, "tokenizer": tokenizer, "vocab_size": tok.vocab_size, "val_fraction": VAL_FRACTION,
            "train_tokens": int(len(train)), "sources": stats}
    try:
        _write_entry(entry, tok, train, val, meta)
    except OSError as exc:
        warnings.warn(f"could not cache tokens in {entry} ({exc}); keeping them in memory", stacklevel=2)
        return Corpus(name, tok, tok.vocab_size, train, val, {**meta, "cache": None})
    return _read_entry(entry) or Corpus(name, tok, tok.vocab_size, train, val, meta)
