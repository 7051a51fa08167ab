"""The real fetch from Debian's archive (network, ~40 s): pinned versions give the pinned texts.

Slow and networked, so outside CI; run with ``python -m pytest tests/lab/test_data_fetch.py -m slow``.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from sfplus_lab.data import debian, load_corpus
from sfplus_lab.data.cleaning import builtin_from_sources
from sfplus_lab.data.corpus import builtin_sources

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs apt-get and dpkg-deb (a Debian-based system)")
    cache = tmp_path_factory.mktemp("sfplus-cache")
    debian.fetch_corpus(cache, log=print)
    return cache


def test_fetch_gives_the_pinned_texts(fetched: Path) -> None:
    manifest_sources = load_corpus(["debian"], cache_dir=str(fetched)).meta["sources"]
    pins = {p.source: p.text_sha256 for p in debian.PACKAGES}
    assert {s["name"]: s["sha256"] for s in manifest_sources} == pins
    total = sum((fetched / "debian" / "texts" / f"{name}.txt").stat().st_size for name in pins)
    assert 25e6 < total < 35e6


def test_builtin_texts_are_rederived_from_the_fetch(fetched: Path) -> None:
    # the built-in Persuasion is janeaustenr's last novel; rebuild it the way the fetch does
    from sfplus_lab.data.cleaning import austen_lines_to_text
    from sfplus_lab.data.rdata import read_lazyload_db

    deb = next((fetched / "debian" / "debs").glob("r-cran-janeaustenr_*.deb"))
    unpacked = fetched / "unpacked"
    debian.extract_deb(deb, unpacked)
    db = read_lazyload_db(unpacked / "usr/lib/R/site-library/janeaustenr/data/Rdata")
    texts = {"austen-persuasion": austen_lines_to_text(db["persuasion"].value),
             "melville-mobydick": (fetched / "debian" / "texts" / "mobydick.txt").read_text()}
    rebuilt = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in builtin_from_sources(texts).items()}
    assert rebuilt == {s.name: s.sha256 for s in builtin_sources()}
