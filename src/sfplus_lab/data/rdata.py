"""Read character vectors out of R lazy-load databases (``.rdx`` index + ``.rdb`` records), stdlib only.

Why: Debian ships Jane Austen's novels (``r-cran-janeaustenr``) and Moby Dick (``r-cran-tokenizers``) as R
package data, stored as lazy-load databases. Reading them needs neither R nor root: the ``.rdx`` file is a
gzip- (or zlib-) compressed serialised R list ``list(variables=, references=, compressed=)`` whose
``variables`` maps each object name to an (offset, length) pair in the ``.rdb`` file; each ``.rdb`` record is a
4-byte big-endian uncompressed size followed by a zlib stream (or a type byte ``'2'``/``'Z'``/``'0'`` and a
bzip2/xz/raw payload) holding one object in R's XDR serialisation format (``R Internals``, section 1.8).

Only what data packages use is decoded: vectors (logical, integer, double, complex, character, list, raw),
pairlists (for attributes), symbols, references, environments and a few ALTREP compact forms. Anything else
raises :class:`RDataError` naming the type, rather than guessing.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RDataError", "RObject", "read_lazyload_db", "unserialize"]

# SEXP type codes (R's Rinternals.h) and the pseudo-types of the serialisation format (serialize.c).
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 9, 10, 13, 14, 15, 16
VECSXP, EXPRSXP, RAWSXP, S4SXP = 19, 20, 24, 25
ALTREP_SXP, ATTRLISTSXP, ATTRLANGSXP, BASEENV_SXP, EMPTYENV_SXP = 238, 239, 240, 241, 242
PERSISTSXP, PACKAGESXP, NAMESPACESXP, BASENAMESPACE_SXP, MISSINGARG_SXP = 247, 248, 249, 250, 251
UNBOUNDVALUE_SXP, GLOBALENV_SXP, NILVALUE_SXP, REFSXP = 252, 253, 254, 255

_NA_INTEGER = -(2**31)
_LATIN1_MASK, _UTF8_MASK = 1 << 2, 1 << 3


class RDataError(ValueError):
    """The bytes are not an R serialisation (or use a feature this reader does not decode)."""


@dataclass(slots=True)
class RObject:
    """An R value: ``value`` is a Python list (vectors), str/None (CHARSXP), or a dict (environments)."""

    type: int
    value: Any
    attributes: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str] | None:
        """The ``names`` attribute as a list of strings, if the object has one."""
        names = self.attributes.get("names")
        return None if names is None else list(names.value)


@dataclass(slots=True)
class _Environment:
    """A serialised R environment: only its frame (name -> value) is kept."""

    frame: dict[str, Any] = field(default_factory=dict)


class _Reader:
    """A cursor over one XDR serialisation stream, with R's reference table."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[Any] = []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RDataError(f"truncated R serialisation: need {n} bytes at offset {self.pos}, have {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints, upper then lower 32 bits
            upper, lower = self.int(), self.int()
            n = (upper << 32) + (lower & 0xFFFFFFFF)
        if n < 0:
            raise RDataError(f"negative vector length {n} at offset {self.pos}")
        return n


def unserialize(data: bytes) -> Any:
    """Decode one R object from ``serialize()`` output in XDR format (the ``X\\n`` header, versions 2 and 3)."""
    reader = _Reader(data)
    if reader.take(2) != b"X\n":
        raise RDataError("not an XDR R serialisation (expected header 'X\\n'; ascii and native formats are not read)")
    version = reader.int()
    reader.int(), reader.int()  # R version that wrote it, minimal R version to read it
    if version == 3:
        reader.take(reader.int())  # native encoding name
    elif version != 2:
        raise RDataError(f"unsupported R serialisation version {version}")
    return _read_item(reader)


def _read_item(r: _Reader) -> Any:
    """Read one item; dispatch on the low byte of its flags word."""
    flags = r.int()
    sxp = flags & 0xFF
    has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
    if sxp in _SINGLETONS:
        return _SINGLETONS[sxp]
    if sxp == REFSXP:
        index = flags >> 8 or r.int()
        return r.refs[index - 1]
    if sxp == SYMSXP:
        name = _read_item(r)
        symbol = RObject(SYMSXP, name.value if isinstance(name, RObject) else name)
        r.refs.append(symbol)
        return symbol
    if sxp in (PACKAGESXP, NAMESPACESXP, PERSISTSXP):
        if r.int() != 0:
            raise RDataError("unexpected non-zero marker in a persistent string vector")
        value = RObject(sxp, [_read_item(r).value for _ in range(r.int())])
        r.refs.append(value)
        return value
    if sxp == ENVSXP:
        return _read_environment(r)
    if sxp in (LISTSXP, LANGSXP, ATTRLISTSXP, ATTRLANGSXP, PROMSXP, CLOSXP):
        return _read_pairlist(r, sxp, has_attr, has_tag)
    if sxp == CHARSXP:
        return _read_charsxp(r, flags)
    if sxp == ALTREP_SXP:
        return _read_altrep(r)
    value = _read_vector(r, sxp)
    if has_attr:
        value.attributes = _attributes(_read_item(r))
    return value


_SINGLETONS: dict[int, Any] = {
    NILVALUE_SXP: None,
    EMPTYENV_SXP: _Environment(),
    BASEENV_SXP: _Environment(),
    GLOBALENV_SXP: _Environment(),
    UNBOUNDVALUE_SXP: None,
    MISSINGARG_SXP: None,
    BASENAMESPACE_SXP: _Environment(),
}


def _read_charsxp(r: _Reader, flags: int) -> str | None:
    """A CHARSXP: length (-1 for NA) and bytes; the encoding comes from the ``levels`` bits of the flags."""
    n = r.int()
    if n == -1:
        return None
    raw = r.take(n)
    levels = flags >> 12
    if levels & _LATIN1_MASK:
        return raw.decode("latin-1")
    return raw.decode("utf-8", errors="strict" if levels & _UTF8_MASK else "replace")


def _read_vector(r: _Reader, sxp: int) -> RObject:
    """Atomic and generic vectors: a length, then the elements."""
    if sxp == STRSXP:
        return RObject(sxp, [_read_item(r) for _ in range(r.length())])
    if sxp in (VECSXP, EXPRSXP):
        return RObject(sxp, [_read_item(r) for _ in range(r.length())])
    if sxp in (LGLSXP, INTSXP):
        n = r.length()
        ints = struct.unpack(f">{n}i", r.take(4 * n))
        return RObject(sxp, [None if v == _NA_INTEGER else v for v in ints])
    if sxp == REALSXP:
        n = r.length()
        return RObject(sxp, list(struct.unpack(f">{n}d", r.take(8 * n))))
    if sxp == CPLXSXP:
        n = r.length()
        parts = struct.unpack(f">{2 * n}d", r.take(16 * n))
        return RObject(sxp, [complex(parts[i], parts[i + 1]) for i in range(0, 2 * n, 2)])
    if sxp == RAWSXP:
        return RObject(sxp, r.take(r.length()))
    if sxp == S4SXP:
        return RObject(sxp, None)
    raise RDataError(f"R serialisation type {sxp} is not supported by this reader (offset {r.pos})")


def _read_pairlist(r: _Reader, sxp: int, has_attr: bool, has_tag: bool) -> RObject:
    """A pairlist, read iteratively along its CDR so long lists do not recurse deeply."""
    items: list[tuple[str | None, Any]] = []
    attributes: dict[str, Any] = {}
    while True:
        if has_attr:
            attributes = attributes or _attributes(_read_item(r))
        tag = _read_item(r) if has_tag else None
        items.append((tag.value if isinstance(tag, RObject) else None, _read_item(r)))
        flags = r.int()
        next_sxp = flags & 0xFF
        if sxp not in (LISTSXP, ATTRLISTSXP) or next_sxp not in (LISTSXP, ATTRLISTSXP):
            r.pos -= 4  # not a plain continuation: let the generic reader handle the CDR
            _read_item(r)
            break
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
    return RObject(LISTSXP if sxp == ATTRLISTSXP else sxp, items, attributes)


def _read_environment(r: _Reader) -> _Environment:
    """An environment: locked flag, enclosure, frame, hash table, attributes. Registered before its contents."""
    env = _Environment()
    r.refs.append(env)
    r.int()  # locked
    _read_item(r)  # enclosure
    for table in (_read_item(r), _read_item(r)):  # frame (pairlist), hash table (list of pairlists)
        for chain in _pairlists(table):
            env.frame.update({tag: value for tag, value in chain.value if tag is not None})
    _read_item(r)  # attributes
    return env


def _pairlists(obj: Any) -> list[RObject]:
    if isinstance(obj, RObject) and obj.type == LISTSXP:
        return [obj]
    if isinstance(obj, RObject) and obj.type == VECSXP:
        return [item for item in obj.value if isinstance(item, RObject) and item.type == LISTSXP]
    return []


def _read_altrep(r: _Reader) -> RObject:
    """ALTREP objects: compact integer/real sequences and wrappers are expanded; others are refused."""
    info, state, attr = _read_item(r), _read_item(r), _read_item(r)
    kind = info.value[0][1].value if isinstance(info, RObject) and info.value else None
    if kind in ("compact_intseq", "compact_realseq"):
        n, start, step = state.value[:3]
        values = [start + i * step for i in range(int(n))]
        result = RObject(INTSXP if kind == "compact_intseq" else REALSXP, [int(v) for v in values]
                         if kind == "compact_intseq" else values)
    elif isinstance(kind, str) and kind.startswith("wrap_"):
        result = state.value[0][1]
    elif kind == "deferred_string":
        source = state.value[0][1]
        result = RObject(STRSXP, [None if v is None else str(v) for v in source.value])
    else:
        raise RDataError(f"ALTREP class {kind!r} is not supported by this reader")
    if attr is not None:
        result.attributes = _attributes(attr)
    return result


def _attributes(pairlist: Any) -> dict[str, Any]:
    if not isinstance(pairlist, RObject) or pairlist.type != LISTSXP:
        return {}
    return {tag: value for tag, value in pairlist.value if tag is not None}


def _decompress_record(record: bytes, where: str) -> bytes:
    """One ``.rdb`` record: 4-byte big-endian size, then zlib, or a type byte and bzip2 / xz / raw bytes."""
    if len(record) < 5:
        raise RDataError(f"{where}: record of {len(record)} bytes is too short")
    size = struct.unpack(">I", record[:4])[0]
    kind, body = record[4:5], record[5:]
    try:
        if kind == b"2":
            data = bz2.decompress(body)
        elif kind == b"Z":
            data = lzma.decompress(body)
        elif kind == b"0":
            data = body
        else:
            data = zlib.decompress(record[4:])
    except (OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise RDataError(f"{where}: cannot decompress record: {exc}") from exc
    if len(data) != size:
        raise RDataError(f"{where}: record decompressed to {len(data)} bytes, header says {size}")
    return data


def _read_index(rdx: Path) -> dict[str, tuple[int, int]]:
    """The ``.rdx`` index: a gzip (saveRDS) or size+zlib compressed serialised list; returns name -> (offset, len)."""
    raw = rdx.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else _decompress_record(raw, str(rdx))
    index = unserialize(data)
    if not isinstance(index, RObject) or index.type != VECSXP or index.names() is None:
        raise RDataError(f"{rdx}: not an R lazy-load index (expected a named list)")
    variables = dict(zip(index.names() or [], index.value)).get("variables")
    if not isinstance(variables, RObject) or variables.names() is None:
        raise RDataError(f"{rdx}: the index has no 'variables' entry")
    return {name: (int(v.value[0]), int(v.value[1])) for name, v in zip(variables.names() or [], variables.value)}


def read_lazyload_db(prefix: str | Path) -> dict[str, Any]:
    """Read every variable of the lazy-load database ``prefix.rdx`` / ``prefix.rdb`` (e.g. ``.../data/Rdata``)."""
    prefix = Path(prefix)
    rdx, rdb = prefix.with_suffix(".rdx"), prefix.with_suffix(".rdb")
    blob = rdb.read_bytes()
    objects: dict[str, Any] = {}
    for name, (offset, length) in _read_index(rdx).items():
        if offset < 0 or offset + length > len(blob):
            raise RDataError(f"{rdb}: variable {name!r} points past the end of the file")
        objects[name] = unserialize(_decompress_record(blob[offset : offset + length], f"{rdb}:{name}"))
    return objects
