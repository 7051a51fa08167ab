"""Read SWORD zText / zCom modules (Bibles and commentaries) into plain prose, stdlib only.

Why: Debian ships the King James and World English Bibles and two public-domain commentaries (Matthew
Henry's, Spurgeon's Treasury of David) as SWORD modules. A module keeps, per testament (``ot``/``nt``), three
files named ``<testament>.<b|c|v>z<s|v|z>`` (the letter is the block size: book, chapter, verse):

* ``?zs`` block table: little-endian uint32 (offset, compressed size, uncompressed size) per block;
* ``?zv`` entry index in versification order: uint32 block, uint32 start, then the entry size as uint16
  (zText/zCom) or uint32 (zText4/zCom4);
* ``?zz`` the blocks themselves, each a zlib stream.

Entries hold OSIS XML. We keep the words and the paragraph/heading structure and drop footnotes, Strong's
numbers and every other tag. Commentaries "link" one entry to several verses (same block, start and size);
each linked text is kept once.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SwordError", "SwordModule", "osis_to_text", "read_conf", "read_module_text"]


class SwordError(ValueError):
    """A SWORD module's files are missing or inconsistent."""


@dataclass(slots=True)
class SwordModule:
    """A module found through its ``mods.d/*.conf``: its name, data folder and driver."""

    name: str
    data_path: Path
    driver: str


def read_conf(conf: Path, sword_root: Path) -> SwordModule:
    """Parse the few keys we need (section name, DataPath, ModDrv) from a module's .conf file."""
    name, values = "", {}
    for line in conf.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), value.strip())
    if not name or "DataPath" not in values:
        raise SwordError(f"{conf}: not a SWORD module configuration (no [name] or DataPath)")
    return SwordModule(name, (sword_root / values["DataPath"]).resolve(), values.get("ModDrv", ""))


# --- OSIS markup -> text -------------------------------------------------------------------------------
_DROP = re.compile(r"<note\b[^>]*>.*?</note>|<note\b[^>]*/>", re.DOTALL)  # footnotes and cross references
_BREAK = re.compile(
    r"<(?:/?p\b|lb\b|/?lg\b|l\b[^>]*/|chapter\b|div\b[^>]*type=\"(?:x-p|paragraph|book|chapter|section|"
    r"introduction|front)\")[^>]*>|</?title\b[^>]*>|</l>"
)
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n+")


_C1 = re.compile("[\x80-\x9f]")


def _dos_letter(match: re.Match[str]) -> str:
    return bytes([ord(match.group())]).decode("cp437")


def osis_to_text(osis: str) -> str:
    """Plain text from OSIS XML: notes removed, paragraph-like tags -> blank lines, other tags removed.

    C1 control characters are read as the DOS code page 437 letters they once were: the Treasury of David
    module has eight ("Fra Thom\x82 de Jesu" is "Fra Thomé de Jesu", "h\x91c" is "hæc").
    """
    text = _DROP.sub("", _C1.sub(_dos_letter, osis))
    text = _BREAK.sub("\n\n", text)
    text = html.unescape(_TAG.sub("", text))
    text = _SPACES.sub(" ", text)
    lines = (line.strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", "\n".join(lines))


# --- the binary files ---------------------------------------------------------------------------------
def _blocks(path: Path) -> list[tuple[int, int, int]]:
    raw = path.read_bytes()
    if len(raw) % 12:
        raise SwordError(f"{path}: block table of {len(raw)} bytes is not a multiple of 12")
    return [struct.unpack_from("<III", raw, i) for i in range(0, len(raw), 12)]


def _entries(path: Path, blocks: list[tuple[int, int, int]], driver: str) -> list[tuple[int, int, int]]:
    """The entry index. The record size (10 or 12 bytes) is taken from the driver name but checked against
    the data, because some packaged .conf files name the other driver (Debian's mhcc says zCom4, its
    index has 10-byte records)."""
    raw = path.read_bytes()
    sizes = (12, 10) if driver.endswith("4") else (10, 12)
    for size in sizes:
        if len(raw) % size:
            continue
        fmt = "<IIH" if size == 10 else "<III"
        entries = [struct.unpack_from(fmt, raw, i) for i in range(0, len(raw), size)]
        if all(n == 0 or (b < len(blocks) and s + n <= blocks[b][2]) for b, s, n in entries):
            return entries
    raise SwordError(f"{path}: entry index matches neither 10- nor 12-byte records for its block table")


def _testament_files(folder: Path, testament: str) -> tuple[Path, Path, Path] | None:
    for letter in "bcv":
        files = tuple(folder / f"{testament}.{letter}z{kind}" for kind in "svz")
        if all(f.exists() for f in files):
            return files  # type: ignore[return-value]
    return None


def _testament_osis(folder: Path, testament: str, driver: str) -> list[str]:
    """Every distinct non-empty entry of one testament, in index order, as OSIS strings."""
    files = _testament_files(folder, testament)
    if files is None or files[0].stat().st_size == 0:
        return []
    blocks = _blocks(files[0])
    entries = _entries(files[1], blocks, driver)
    data = files[2].read_bytes()
    cache: dict[int, bytes] = {}
    seen: set[tuple[int, int, int]] = set()
    out: list[str] = []
    for entry in entries:
        block, start, size = entry
        if size == 0 or entry in seen:
            continue
        seen.add(entry)
        if block not in cache:
            offset, csize, usize = blocks[block]
            try:
                cache = {block: zlib.decompress(data[offset : offset + csize])}  # blocks are read in order
            except zlib.error as exc:
                raise SwordError(f"{files[2]}: block {block} does not decompress: {exc}") from exc
            if len(cache[block]) != usize:
                raise SwordError(f"{files[2]}: block {block} is {len(cache[block])} bytes, index says {usize}")
        out.append(cache[block][start : start + size].decode("utf-8", errors="replace"))
    return out


def read_module_text(module: SwordModule) -> str:
    """The whole module (Old then New Testament) as plain text, entries separated by spaces/paragraphs."""
    if not module.data_path.is_dir():
        raise SwordError(f"module {module.name}: data folder {module.data_path} not found")
    osis = _testament_osis(module.data_path, "ot", module.driver) + _testament_osis(module.data_path, "nt",
                                                                                    module.driver)
    if not osis:
        raise SwordError(f"module {module.name}: no entries found in {module.data_path}")
    return osis_to_text(" ".join(osis))
