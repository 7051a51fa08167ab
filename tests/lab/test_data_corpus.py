"""load_corpus: built-in text, user files and folders, the contiguous split, errors, the memmap cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sfplus_lab.data import ByteTokenizer, default_cache_dir, load_corpus, tokenizer_from_dict
from sfplus_lab.data import corpus as corpus_module
from sfplus_lab.data.corpus import builtin_sources, split_text
from sfplus_lab.errors import UserError

PROSE = "".join(f"Line {i}: it is a truth universally acknowledged, that a single line wants a neighbour.\n"
                for i in range(200))


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def test_builtin_corpus_has_two_prose_sources(cache: str) -> None:
    c = load_corpus(None, cache_dir=cache)
    assert c.name == "builtin" and c.vocab_size == 256 and isinstance(c.tokenizer, ByteTokenizer)
    assert list(c.val) == ["austen-persuasion", "melville-mobydick"]
    assert c.train.ndim == 1 and c.train.dtype == np.uint16 and len(c.train) > 500_000
    assert int(c.train.max()) < c.vocab_size
    json.dumps(c.meta)  # JSON-able, for config.json
    assert c.tokenizer.decode(c.val["melville-mobydick"][-20:]).endswith("Atlantic.\n")
    text = c.tokenizer.decode(c.train[:2000])
    assert "Sir Walter Elliot" in text


def test_builtin_texts_match_the_readme_hashes() -> None:
    readme = (Path(corpus_module.__file__).parent / "builtin" / "README.md").read_text()
    for source in builtin_sources():
        assert source.sha256 in readme, source.name


def test_split_is_contiguous_tail_at_a_line_start() -> None:
    train, val = split_text(PROSE)
    assert train + val == PROSE
    assert train.endswith("\n") and val.startswith("Line ")
    assert 0.04 < len(val) / len(PROSE) < 0.06


def test_per_source_split_and_concatenated_train(tmp_path: Path, cache: str) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(PROSE)
    b.write_text(PROSE.upper())
    c = load_corpus([str(a), str(b)], cache_dir=cache)
    assert list(c.val) == ["a", "b"]
    train_a, val_a = split_text(PROSE)
    train_b, val_b = split_text(PROSE.upper())
    assert c.tokenizer.decode(c.train) == train_a + train_b
    assert c.tokenizer.decode(c.val["a"]) == val_a and c.tokenizer.decode(c.val["b"]) == val_b
    assert [s["sha256"] for s in c.meta["sources"]][0] == corpus_module.Source("a", PROSE, "x").sha256


def test_folder_is_one_source_and_names_stay_unique(tmp_path: Path, cache: str) -> None:
    folder = tmp_path / "books"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.txt").write_text(PROSE)
    (folder / "sub" / "two.md").write_text(PROSE)
    (folder / "image.png").write_bytes(b"\x89PNG\x00\x00")  # not a text suffix: ignored
    other = tmp_path / "x" / "books.txt"
    other.parent.mkdir()
    other.write_text(PROSE)
    c = load_corpus([str(folder), str(other)], cache_dir=cache)
    assert list(c.val) == ["books", "books-2"]
    assert c.meta["sources"][0]["chars"] == 2 * len(PROSE) + 1


def test_source_names_come_from_file_stems(tmp_path: Path, cache: str) -> None:
    f = _write(tmp_path / "my.book.txt", PROSE.encode())
    assert list(load_corpus([str(f)], cache_dir=cache).val) == ["my.book"]
    g = _write(tmp_path / "Apache-2.0", PROSE.encode())  # not a text suffix: the name stays whole
    assert list(load_corpus([str(g)], cache_dir=cache).val) == ["Apache-2.0"]


def test_sfplus_cache_env_sets_the_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFPLUS_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    f = _write(tmp_path / "t.txt", PROSE.encode())
    load_corpus([str(f)])
    assert any((tmp_path / "envcache" / "tokens").iterdir())
    monkeypatch.delenv("SFPLUS_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "sfplus"


def test_crlf_and_bom_are_normalised(tmp_path: Path, cache: str) -> None:
    f = tmp_path / "win.txt"
    f.write_bytes(b"\xef\xbb\xbf" + PROSE.replace("\n", "\r\n").encode())
    c = load_corpus([str(f)], cache_dir=cache)
    assert c.tokenizer.decode(c.train) + c.tokenizer.decode(c.val["win"]) == PROSE


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.txt", "not found: .*missing.txt"),
        (lambda d: _write(d / "empty.txt", b""), "empty.txt is empty"),
        (lambda d: _write(d / "blank.txt", b"  \n\n \n"), "blank.txt is empty"),
        (lambda d: _write(d / "model.bin", b"\x00\x01\x02" * 100), "model.bin looks binary"),
        (lambda d: _write(d / "latin.txt", "caf\xe9 au lait\n".encode("latin-1")), "latin.txt is not UTF-8"),
        (lambda d: _mkdir(d / "nothing"), "nothing has no text files"),
    ],
)
def test_bad_paths_are_user_errors_naming_the_path(tmp_path: Path, cache: str, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(UserError, match=message):
        load_corpus([str(path)], cache_dir=cache)


def test_other_bad_requests(tmp_path: Path, cache: str) -> None:
    f = _write(tmp_path / "ok.txt", PROSE.encode())
    with pytest.raises(UserError, match="no data"):
        load_corpus([], cache_dir=cache)
    with pytest.raises(UserError, match="cannot be mixed"):
        load_corpus(["debian", str(f)], cache_dir=cache)
    with pytest.raises(UserError, match="unknown tokenizer 'words'"):
        load_corpus([str(f)], tokenizer="words", cache_dir=cache)
    with pytest.raises(UserError, match="run 'sfplus data fetch' first"):
        load_corpus(["debian"], cache_dir=cache)


def test_cache_is_reused_as_memmap(tmp_path: Path, cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _write(tmp_path / "t.txt", PROSE.encode())
    first = load_corpus([str(f)], cache_dir=cache)
    assert isinstance(first.train, np.memmap)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(corpus_module, "_tokenize", no_tokenizing)
    again = load_corpus([str(f)], cache_dir=cache)
    assert isinstance(again.train, np.memmap)
    assert np.array_equal(first.train, again.train) and again.meta == first.meta
    # changed text -> a different key -> tokenised again (here: the patched function is hit)
    f.write_text(PROSE + "one more line\n")
    with pytest.raises(AssertionError, match="tokenised again"):
        load_corpus([str(f)], cache_dir=cache)


def test_damaged_cache_entry_is_rebuilt(tmp_path: Path, cache: str) -> None:
    f = _write(tmp_path / "t.txt", PROSE.encode())
    expected = np.array(load_corpus([str(f)], cache_dir=cache).train)  # a copy: the file is about to shrink
    entry = next((Path(cache) / "tokens").iterdir())
    with open(entry / "train.bin", "r+b") as fh:
        fh.truncate(10)
    again = load_corpus([str(f)], cache_dir=cache)
    assert np.array_equal(expected, np.asarray(again.train))
    assert isinstance(again.train, np.memmap)  # the entry was rebuilt, not just bypassed


def test_unwritable_cache_falls_back_to_memory(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.txt", PROSE.encode())
    blocker = _write(tmp_path / "afile", b"x")  # a file where the cache folder should go
    with pytest.warns(UserWarning, match="could not cache"):
        c = load_corpus([str(f)], cache_dir=str(blocker))
    assert len(c.train) > 0


def test_byte_tokenizer_round_trip_and_dict() -> None:
    tok = tokenizer_from_dict(ByteTokenizer().to_dict())
    s = "Anne Elliot — “quoted”, naïve\n"
    assert tok.decode(tok.encode(s)) == s and tok.vocab_size == 256
    with pytest.raises(UserError, match="unknown tokenizer"):
        tokenizer_from_dict({"name": "sentencepiece"})


def test_bpe_tokenizer_trains_caches_and_round_trips(tmp_path: Path, cache: str) -> None:
    pytest.importorskip("tokenizers")
    f = _write(tmp_path / "t.txt", PROSE.encode())
    c = load_corpus([str(f)], tokenizer="bpe", vocab_size=300, cache_dir=cache)
    assert c.meta["tokenizer"] == "bpe" and 256 < c.vocab_size <= 300
    assert len(c.train) < len(split_text(PROSE)[0])  # merges make it shorter than bytes
    rebuilt = tokenizer_from_dict(json.loads(json.dumps(c.tokenizer.to_dict())))
    assert rebuilt.decode(c.val["t"]) == split_text(PROSE)[1]
    again = load_corpus([str(f)], tokenizer="bpe", vocab_size=300, cache_dir=cache)
    assert np.array_equal(np.asarray(again.train), np.asarray(c.train))


def test_bpe_without_the_package_is_a_user_error(tmp_path: Path, cache: str, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "tokenizers":
            raise ModuleNotFoundError("No module named 'tokenizers'", name="tokenizers")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    f = _write(tmp_path / "t.txt", PROSE.encode())
    with pytest.raises(UserError, match="pip install tokenizers"):
        load_corpus([str(f)], tokenizer="bpe", cache_dir=cache)


def test_bad_bpe_vocab_size(tmp_path: Path, cache: str) -> None:
    f = _write(tmp_path / "t.txt", PROSE.encode())
    with pytest.raises(UserError, match="between 257 and 65535"):
        load_corpus([str(f)], tokenizer="bpe", vocab_size=70000, cache_dir=cache)
    with pytest.raises(UserError, match="vocab size 256"):
        load_corpus([str(f)], tokenizer="byte", vocab_size=512, cache_dir=cache)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_concurrent_first_loads_agree(tmp_path: Path, cache: str) -> None:
    """Two processes (e.g. two ranks or bench workers) filling the same empty cache at once."""
    import subprocess
    import sys

    f = _write(tmp_path / "t.txt", (PROSE * 20).encode())
    code = ("import sys, hashlib, numpy as np; from sfplus_lab.data import load_corpus\n"
            "c = load_corpus([sys.argv[1]], cache_dir=sys.argv[2])\n"
            "print(hashlib.sha256(np.asarray(c.train).tobytes()).hexdigest(), type(c.train).__name__)\n")
    procs = [subprocess.Popen([sys.executable, "-W", "error", "-c", code, str(f), cache], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].split()[1] == "memmap"
    assert len(list((Path(cache) / "tokens").iterdir())) == 1  # one entry, no half-written leftovers
