"""``sfplus data``: ``fetch`` builds the Debian corpus; ``info`` shows what a ``--data`` choice loads to."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import UserError
from .corpus import default_cache_dir, load_corpus
from .debian import fetch_corpus


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download pinned Debian packages and extract the ~30 MB text corpus")
    fetch.add_argument("--cache-dir", default=None,
                       help="where to keep packages, texts and tokens (default $SFPLUS_CACHE or ~/.cache/sfplus)")
    fetch.add_argument("--debs", default=None, metavar="DIR",
                       help="take the .deb files from DIR instead of downloading them (offline use)")
    fetch.add_argument("--allow-other-versions", action="store_true",
                       help="if the archive no longer serves a pinned version, use the one it serves (recorded)")
    info = actions.add_parser("info", help="load a corpus (tokenising and caching it) and print its sources")
    info.add_argument("--data", nargs="+", default=None, metavar="PATH",
                      help="text files/folders, or 'debian' for the fetched corpus (default: built-in text)")
    info.add_argument("--tokenizer", choices=("byte", "bpe"), default="byte")
    info.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size (default 4096)")
    info.add_argument("--cache-dir", default=None)


def run(name: str, args: argparse.Namespace) -> int:
    if args.data_action == "fetch":
        return _fetch(args)
    if args.data_action == "info":
        return _info(args)
    print("usage: sfplus data {fetch,info} [options]  (see sfplus data --help)", file=sys.stderr)
    return 2


def _fetch(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    debs = Path(args.debs).expanduser() if args.debs else None
    if debs is not None and not debs.is_dir():
        raise UserError(f"--debs: no such folder: {debs}")
    start = time.perf_counter()
    manifest = fetch_corpus(cache, allow_other_versions=args.allow_other_versions, debs_dir=debs)
    changed = [r["name"] for r in manifest["sources"] if r["matches_pin"] is False]
    print(f"corpus: {manifest['total_bytes'] / 1e6:.1f} MB in {len(manifest['sources'])} sources, "
          f"{time.perf_counter() - start:.0f} s; manifest {cache / 'debian' / 'manifest.json'}")
    if changed:
        print(f"note: {', '.join(changed)} differ from the pinned text hashes (other package versions?)")
    print("train on it with: sfplus train --data debian")
    return 0


def _info(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    corpus = load_corpus(args.data, tokenizer=args.tokenizer, cache_dir=args.cache_dir, vocab_size=args.vocab_size)
    print(f"corpus {corpus.name}: tokenizer {corpus.meta['tokenizer']} (vocab {corpus.vocab_size}), "
          f"{len(corpus.train):,} training tokens, loaded in {time.perf_counter() - start:.1f} s")
    for s in corpus.meta["sources"]:
        print(f"  {s['name']:<20} {s['chars']:>11,} chars  train {s['train_tokens']:>11,}  val {s['val_tokens']:>9,}"
              f"  sha256 {s['sha256'][:12]}  {s['origin']}")
    return 0
