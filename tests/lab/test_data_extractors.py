"""The stdlib extractors on small synthetic files built here: an R lazy-load db, SWORD modules, a .deb."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from sfplus_lab.cli import main as cli_main
from sfplus_lab.data import debian, load_corpus
from sfplus_lab.data.cleaning import clean_text, strip_gutenberg
from sfplus_lab.data.rdata import RDataError, read_lazyload_db, unserialize
from sfplus_lab.data.sword import SwordModule, osis_to_text, read_conf, read_module_text
from sfplus_lab.errors import UserError


# --- a minimal writer of R's XDR serialisation (format version 3), enough for data packages -------------
class RWriter:
    """Serialises strings, integer vectors and named lists the way R's serialize() does."""

    UTF8 = 1 << 3 << 12  # CHARSXP 'levels' bit for UTF-8

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.symbols: list[str] = []

    def int(self, v: int) -> None:
        self.out.write(struct.pack(">i", v))

    def charsxp(self, s: str | None) -> None:
        if s is None:
            self.int(9)
            self.int(-1)
            return
        raw = s.encode("utf-8")
        self.int(9 | self.UTF8)
        self.int(len(raw))
        self.out.write(raw)

    def symbol(self, name: str) -> None:
        if name in self.symbols:  # the second use of a symbol is a reference, as in R
            self.int(((self.symbols.index(name) + 1) << 8) | 255)
            return
        self.symbols.append(name)
        self.int(1)
        self.charsxp(name)

    def value(self, v: object, names: list[str] | None = None, attrs: dict[str, object] | None = None) -> None:
        attrs = {**({"names": names} if names is not None else {}), **(attrs or {})}
        attr = (1 << 9) if attrs else 0
        if isinstance(v, str) or v is None:
            v = [v]
        if isinstance(v, list) and all(isinstance(x, str) or x is None for x in v):
            self.int(16 | attr)
            self.int(len(v))
            for s in v:
                self.charsxp(s)
        elif isinstance(v, tuple):  # integer vector
            self.int(13 | attr)
            self.int(len(v))
            for x in v:
                self.int(x)
        elif isinstance(v, dict):
            self.value(list(v.values()), attrs={"names": list(v.keys()), **attrs})
            return
        elif isinstance(v, list):  # generic vector (R list)
            self.int(19 | attr)
            self.int(len(v))
            for x in v:
                self.value(x)
        for key, value in attrs.items():  # the attributes pairlist: one tagged node per attribute
            self.int(2 | (1 << 10))
            self.symbol(key)
            self.value(value)
        if attrs:
            self.int(254)

    def dumps(self, v: object) -> bytes:
        self.out.write(b"X\n")
        for x in (3, 0x040201, 0x030500, 5):
            self.int(x)
        self.out.write(b"UTF-8")
        self.value(v)
        return self.out.getvalue()


def serialize(v: object) -> bytes:
    return RWriter().dumps(v)


def write_lazyload_db(prefix: Path, objects: dict[str, object], *, xz: str | None = None) -> None:
    """An .rdb of size+zlib records and a gzip'd .rdx index, as R's makeLazyLoadDB writes them."""
    blob, variables = b"", {}
    for name, obj in objects.items():
        data = serialize(obj)
        record = struct.pack(">I", len(data)) + zlib.compress(data)
        if name == xz:  # the 'Z' record type R uses for xz compression
            import lzma

            record = struct.pack(">I", len(data)) + b"Z" + lzma.compress(data)
        variables[name] = (len(blob), len(record))
        blob += record
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".rdb").write_bytes(blob)
    index = {"variables": variables, "references": {}, "compressed": (1,)}
    prefix.with_suffix(".rdx").write_bytes(gzip.compress(serialize(index)))


def test_unserialize_strings_na_unicode_and_named_list() -> None:
    obj = unserialize(serialize({"a": ["x", None, "naïve “q”"], "b": (1, 2, -3)}))
    assert obj.names() == ["a", "b"]
    assert obj.value[0].value == ["x", None, "naïve “q”"]
    assert obj.value[1].value == [1, 2, -3]


def test_unserialize_several_attributes_and_symbol_references() -> None:
    w = RWriter()
    w.out.write(b"X\n" + struct.pack(">iii", 2, 0x040201, 0x020300))  # format version 2: no encoding field
    w.value({"col": ["a", "b"]}, attrs={"class": "data.frame", "row.names": (1, 2)})
    obj = unserialize(w.out.getvalue())
    assert obj.names() == ["col"] and obj.attributes["class"].value == ["data.frame"]
    assert obj.attributes["row.names"].value == [1, 2]
    nested = unserialize(serialize({"x": {"y": ["z"]}}))  # 'names' written once, then as a reference
    assert nested.value[0].names() == ["y"] and nested.value[0].value[0].value == ["z"]


def test_unserialize_rejects_other_formats() -> None:
    with pytest.raises(RDataError, match="not an XDR"):
        unserialize(b"A\n3\n")
    with pytest.raises(RDataError, match="truncated"):
        unserialize(serialize(["a long string"])[:-4])


def test_lazyload_db_round_trip(tmp_path: Path) -> None:
    lines = ["PERSUASION", "", "Chapter 1", "", "Sir Walter Elliot, of Kellynch Hall,"]
    write_lazyload_db(tmp_path / "data" / "Rdata", {"persuasion": lines, "emma": ["EMMA"], "n": (7,)}, xz="emma")
    db = read_lazyload_db(tmp_path / "data" / "Rdata")
    assert db["persuasion"].value == lines and db["emma"].value == ["EMMA"] and db["n"].value == [7]


def test_lazyload_db_bad_record(tmp_path: Path) -> None:
    write_lazyload_db(tmp_path / "Rdata", {"x": ["text"]})
    rdb = tmp_path / "Rdata.rdb"
    good = rdb.read_bytes()
    rdb.write_bytes(good[:6] + b"\xff" * (len(good) - 6))  # same length, damaged zlib stream
    with pytest.raises(RDataError, match="cannot decompress"):
        read_lazyload_db(tmp_path / "Rdata")
    rdb.write_bytes(good[:-3])
    with pytest.raises(RDataError, match="points past the end"):
        read_lazyload_db(tmp_path / "Rdata")


# --- SWORD modules -----------------------------------------------------------------------------------------
VERSES = [
    '<div type="book" osisID="Gen"/><title type="main">The First Book</title>',
    '<chapter n="1" osisID="Gen.1" sID="Gen.1"/>',
    '<w lemma="strong:H7225">In</w> the beginning<note placement="foot">A footnote, dropped.</note> God',
    'created &amp; <transChange>made</transChange> the earth. <div sID="p1" type="x-p"/>',
    "And it was good.",
]


def write_module(root: Path, name: str, entries: list[str], *, record: int, conf_driver: str,
                 link_first: bool = False) -> Path:
    """A one-testament (nt) module: two zlib blocks; entry 0 is the empty module header as in real modules."""
    folder = root / "modules" / "texts" / "ztext" / name
    folder.mkdir(parents=True)
    blocks = [entries[:2], entries[2:]]
    bzs, bzz, bzv = b"", b"", struct.pack("<IIH" if record == 10 else "<III", 0, 0, 0)
    for b, block in enumerate(blocks):
        raw = b""
        for text in block:
            data = text.encode()
            bzv += struct.pack("<IIH" if record == 10 else "<III", b, len(raw), len(data))
            if link_first and b == 1 and not raw:  # a commentary links this entry to the next verse too
                bzv += struct.pack("<IIH" if record == 10 else "<III", b, len(raw), len(data))
            raw += data
        comp = zlib.compress(raw)
        bzs += struct.pack("<III", len(bzz), len(comp), len(raw))
        bzz += comp
    for ext, data in (("bzs", bzs), ("bzv", bzv), ("bzz", bzz)):
        (folder / f"nt.{ext}").write_bytes(data)
    conf = root / "mods.d" / f"{name.lower()}.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(f"[{name}]\nDataPath=./modules/texts/ztext/{name}/\nModDrv={conf_driver}\nEncoding=UTF-8\n")
    return conf


EXPECTED = "The First Book\n\nIn the beginning God created & made the earth.\n\nAnd it was good.\n"


@pytest.mark.parametrize(("record", "driver"), [(10, "zText"), (12, "zText4"), (10, "zCom4"), (12, "zCom")])
def test_sword_module_text(tmp_path: Path, record: int, driver: str) -> None:
    # (10, zCom4) is Debian's mhcc: the .conf names a driver whose record size the files do not use
    conf = write_module(tmp_path, "Tiny", VERSES, record=record, conf_driver=driver)
    module = read_conf(conf, tmp_path)
    assert module.name == "Tiny" and module.driver == driver
    assert clean_text(read_module_text(module)) == EXPECTED


def test_sword_linked_entries_are_kept_once(tmp_path: Path) -> None:
    conf = write_module(tmp_path, "Com", VERSES, record=12, conf_driver="zCom4", link_first=True)
    assert clean_text(read_module_text(read_conf(conf, tmp_path))) == EXPECTED


def test_sword_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        read_module_text(SwordModule("X", tmp_path / "none", "zText"))
    conf = write_module(tmp_path, "Bad", VERSES, record=10, conf_driver="zText")
    bzv = tmp_path / "modules" / "texts" / "ztext" / "Bad" / "nt.bzv"
    bzv.write_bytes(bzv.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="neither 10- nor 12-byte"):
        read_module_text(read_conf(conf, tmp_path))


def test_osis_markup_is_stripped() -> None:
    osis = ('<title type="x-s">Psalm 1</title><div sID="g1" type="x-p"/><hi type="italic">Blessed</hi> is the '
            'man<note type="crossReference"><reference osisRef="Ps.2.1">Ps 2:1</reference></note>.<lb/>Selah.')
    assert clean_text(osis_to_text(osis)) == "Psalm 1\n\nBlessed is the man.\n\nSelah.\n"


def test_c1_controls_become_dos_letters() -> None:
    assert osis_to_text("Fra Thom\x82 de Jesu, h\x91c ratio") == "Fra Thomé de Jesu, hæc ratio"


def test_strip_gutenberg() -> None:
    text = ("Header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nBody.\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nLicence")
    assert strip_gutenberg(text).strip() == "Body."
    with pytest.raises(ValueError, match="no Project Gutenberg"):
        strip_gutenberg("no markers")


# --- .deb packages and the whole fetch, offline (--debs) ---------------------------------------------------
MOBY = ("\ufeffThe Project Gutenberg EBook of Moby Dick\r\n*** START OF THIS PROJECT GUTENBERG EBOOK MOBY DICK ***\r\n"
        + "Call me Ishmael. Some years ago--never mind how long precisely.\r\n" * 40
        + "*** END OF THIS PROJECT GUTENBERG EBOOK MOBY DICK ***\r\nlicence")


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_deb(path: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A real .deb: an ar archive of debian-binary, control.tar.xz and data.tar.xz (dpkg-deb reads it too)."""
    control = f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", _tar({"./control": control.encode()})),
               ("data.tar.xz", _tar({f"./{k}": v for k, v in files.items()}))]
    out = b"!<arch>\n"
    for member, data in members:
        out += f"{member:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    path.write_bytes(out)
    return path


@pytest.fixture
def fake_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, tuple[debian.Package, ...]]:
    """Two small packages standing in for r-cran-tokenizers and a SWORD Bible, pinned to what is built here."""
    debs = tmp_path / "debs"
    debs.mkdir()
    db = tmp_path / "r" / "Rdata"
    write_lazyload_db(db, {"mobydick": {"mobydick": MOBY}})
    r_files = {f"usr/lib/R/site-library/tokenizers/data/Rdata.{ext}": db.with_suffix(f".{ext}").read_bytes()
               for ext in ("rdb", "rdx")}
    sword = tmp_path / "sword"
    write_module(sword, "Tiny", VERSES, record=10, conf_driver="zText")
    s_files = {f"usr/share/sword/{p.relative_to(sword)}": p.read_bytes() for p in sword.rglob("*") if p.is_file()}
    moby = build_deb(debs / "r-cran-tokenizers_0.1-1_all.deb", "r-cran-tokenizers", "0.1-1", r_files)
    kjv = build_deb(debs / "sword-text-kjv_1.0-1_all.deb", "sword-text-kjv", "1.0-1", s_files)
    moby_text = clean_text(strip_gutenberg(MOBY)).encode()
    packages = (
        debian.Package("r-cran-tokenizers", "0.1-1", "mobydick", hashlib.sha256(moby_text).hexdigest(),
                       hashlib.sha256(moby.read_bytes()).hexdigest()),
        debian.Package("sword-text-kjv", "1.0-1", "kjv", hashlib.sha256(EXPECTED.encode()).hexdigest(),
                       hashlib.sha256(kjv.read_bytes()).hexdigest()),
    )
    monkeypatch.setattr(debian, "PACKAGES", packages)
    return debs, packages


@pytest.mark.parametrize("with_dpkg", [True, False])
def test_fetch_from_local_debs_then_load(fake_archive, tmp_path: Path, monkeypatch, with_dpkg: bool) -> None:
    debs, packages = fake_archive
    if not with_dpkg:  # the stdlib ar/tar path, for systems without dpkg-deb
        monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    elif shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    cache = tmp_path / "cache"
    manifest = debian.fetch_corpus(cache, debs_dir=debs, log=lambda m: None)
    assert [r["name"] for r in manifest["sources"]] == ["mobydick", "kjv"]
    assert all(r["matches_pin"] for r in manifest["sources"])
    assert [p["version"] for p in manifest["packages"]] == ["0.1-1", "1.0-1"]
    assert (cache / "debian" / "texts" / "kjv.txt").read_text() == EXPECTED
    assert json.loads((cache / "debian" / "manifest.json").read_text()) == manifest
    corpus = load_corpus(["debian"], cache_dir=str(cache))
    assert corpus.name == "debian" and list(corpus.val) == ["mobydick", "kjv"]
    assert corpus.tokenizer.decode(corpus.train).startswith("Call me Ishmael.")


def test_fetch_version_policy_and_corrupt_debs(fake_archive, tmp_path: Path, monkeypatch) -> None:
    debs, packages = fake_archive
    cache = tmp_path / "cache"
    newer = (debian.Package("r-cran-tokenizers", "0.2-1", "mobydick", "", ""), packages[1])
    monkeypatch.setattr(debian, "PACKAGES", newer)
    with pytest.raises(UserError, match="no r-cran-tokenizers_0.2-1"):
        debian.fetch_corpus(cache, debs_dir=debs, log=lambda m: None)
    manifest = debian.fetch_corpus(cache, debs_dir=debs, allow_other_versions=True, log=lambda m: None)
    assert manifest["version_policy"] == "allow-other-versions"
    assert manifest["packages"][0] == {**manifest["packages"][0], "version": "0.1-1", "pinned_version": "0.2-1"}
    bad_sha = (packages[0], debian.Package("sword-text-kjv", "1.0-1", "kjv", "", "0" * 64))
    monkeypatch.setattr(debian, "PACKAGES", bad_sha)
    with pytest.raises(UserError, match="differs from the pinned"):
        debian.fetch_corpus(cache, debs_dir=debs, log=lambda m: None)


def test_modified_fetched_text_is_refused(fake_archive, tmp_path: Path) -> None:
    debs, _ = fake_archive
    cache = tmp_path / "cache"
    debian.fetch_corpus(cache, debs_dir=debs, log=lambda m: None)
    (cache / "debian" / "texts" / "kjv.txt").write_text("edited\n")
    with pytest.raises(UserError, match="kjv.txt does not match the sha256"):
        load_corpus(["debian"], cache_dir=str(cache))


def test_cli_data_fetch_and_info(fake_archive, tmp_path: Path, capsys) -> None:
    debs, _ = fake_archive
    cache = str(tmp_path / "cache")
    assert cli_main(["data", "fetch", "--debs", str(debs), "--cache-dir", cache]) == 0
    assert "2 sources" in capsys.readouterr().out
    assert cli_main(["data", "info", "--data", "debian", "--cache-dir", cache]) == 0
    assert "kjv" in capsys.readouterr().out
    assert cli_main(["data", "fetch", "--debs", str(tmp_path / "nope"), "--cache-dir", cache]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli_main(["data", "info", "--data", str(tmp_path / "missing.txt"), "--cache-dir", cache]) == 2
    err = capsys.readouterr().err
    assert "missing.txt" in err and "Traceback" not in err
