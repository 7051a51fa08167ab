"""``sfplus data fetch``: build the ~30 MB public-domain corpus from pinned Debian packages, no root needed.

Why Debian: its archive is reachable where little else is, its packages are versioned and signed, and
``apt-get download`` + ``dpkg-deb -x`` fetch and unpack them without installing anything. The texts live in
SWORD modules (read by :mod:`.sword`) and R lazy-load databases (read by :mod:`.rdata`).

Version policy: each package is pinned to the version measured when this corpus was defined. If the archive
no longer serves that version, fetch stops and says so; ``allow_other_versions`` takes what the archive
serves instead and records it. Either way the manifest records every package version, every .deb's sha256
and every extracted text's sha256, and says whether each text matches the pinned hash.

Layout under ``<cache_dir>/debian/``: ``debs/`` (downloaded packages, reused), ``texts/<source>.txt`` and
``manifest.json``, written last: a corpus without a manifest is incomplete and never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import UserError
from ..hashing import sha256_file
from .cleaning import austen_lines_to_text, clean_text, strip_gutenberg
from .corpus import Source
from .rdata import RDataError, read_lazyload_db
from .sword import SwordError, read_conf, read_module_text

__all__ = ["PACKAGES", "Package", "deb_fields", "debian_sources", "extract_deb", "extract_text", "fetch_corpus"]

#: Austen's six novels in publication order (the object names in janeaustenr's data).
AUSTEN_NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
_R_LIB = Path("usr/lib/R/site-library")
_SWORD_ROOT = Path("usr/share/sword")
MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Package:
    """A pinned Debian package and the text source it yields."""

    name: str
    version: str
    source: str
    #: sha256 of the cleaned text extracted from this version (measured on Debian bookworm, 2026-11-25)
    text_sha256: str
    #: sha256 of the .deb (architecture 'all'; amd64 for r-cran-tokenizers, whose data is the same on every arch)
    deb_sha256: str


PACKAGES: tuple[Package, ...] = (
    Package("r-cran-janeaustenr", "1.0.0-1", "austen",
            "652b8c4af9a3123ec359c1b2e4fcee6aac0be7a2d1430e12c607c178a56d7618",
            "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"),
    Package("r-cran-tokenizers", "0.3.0-1", "mobydick",
            "f58aaa81a822e211f9f17c8fae68109cd17b5b2f96ef646794d6eda933c7207b",
            "6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7"),
    Package("sword-text-kjv", "14.3-1", "kjv",
            "bbe8ff03b6798aca9daf737fe862646ad5f0992f2c1c2eb83d9c2bc4f3816a7e",
            "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57"),
    Package("sword-text-web", "426.0-1", "web",
            "4c76f5ff0529fd2d04441f48c1ab97e297f0c07f3701d3874e07045c7a7b6ec8",
            "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1"),
    Package("sword-comm-mhcc", "2.0-1", "mhcc",
            "2b6558bd3bb1c970d3a83e1a58256a7d8f94c3ad001be823df4528e1968c7bd2",
            "06f748215de78ff48fdfdee93e3ffc5af6318b976485f7aedf22309236967e35"),
    Package("sword-comm-tdavid", "2.1-1", "tdavid",
            "e26e5cc4a683e06bc7cf4937c1b140ef5d8a10250d01ae7c42efff30b67f377a",
            "bcbfad701c5c4a061475b58309cebc42755a59e87478c8355227c5e046412b3f"),
)


# --- .deb files: dpkg-deb when present, the stdlib otherwise (ar archive holding tar members) ----------
def _ar_members(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise UserError(f"{path} is not a Debian package (no ar archive header)")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name, size = header[:16].decode("ascii", "replace").strip().rstrip("/"), int(header[48:58])
        members[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
    return members


def _member_tar(path: Path, prefix: str) -> tarfile.TarFile:
    for name, blob in _ar_members(path).items():
        if name.startswith(prefix):
            try:
                return tarfile.open(fileobj=io.BytesIO(blob), mode="r:*")
            except tarfile.TarError as exc:
                raise UserError(f"{path}: cannot open {name} ({exc}); install dpkg-deb to read it") from exc
    raise UserError(f"{path}: no {prefix}* member; not a Debian binary package")


def deb_fields(path: Path) -> dict[str, str]:
    """The control fields (Package, Version, Architecture, ...) of a .deb."""
    if shutil.which("dpkg-deb"):
        out = _run(["dpkg-deb", "-f", str(path)], f"read the control fields of {path}")
        text = out.stdout
    else:
        with _member_tar(path, "control.tar") as tar:
            member = tar.extractfile("./control") or tar.extractfile("control")
            text = member.read().decode("utf-8") if member else ""
    fields = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith((" ", "\t")):
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def extract_deb(path: Path, dest: Path) -> None:
    """Unpack a .deb's files under ``dest`` (``dpkg-deb -x``; no maintainer scripts, no root)."""
    dest.mkdir(parents=True, exist_ok=True)
    if shutil.which("dpkg-deb"):
        _run(["dpkg-deb", "-x", str(path), str(dest)], f"unpack {path}")
        return
    with _member_tar(path, "data.tar") as tar:
        tar.extractall(dest, filter="data")


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise UserError(f"cannot {what}: {cmd[0]} is not installed (sfplus data fetch needs a Debian-based "
                        "system, or --debs DIR with the .deb files already downloaded)") from exc
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"cannot {what}: {' '.join(cmd)} failed: {last}")
    return result


# --- getting the packages ---------------------------------------------------------------------------------
def _find_deb(folder: Path, pkg: Package, version: str | None) -> Path | None:
    """The .deb of ``pkg`` in ``folder`` with the given version (any version if None), newest first."""
    for path in sorted(folder.glob(f"{pkg.name}_*.deb"), key=lambda p: p.stat().st_mtime, reverse=True):
        if version is None or deb_fields(path).get("Version") == version:
            return path
    return None


def _apt_download(spec: str, debs: Path) -> tuple[bool, str]:
    try:
        result = subprocess.run(["apt-get", "download", spec], cwd=debs, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise UserError("sfplus data fetch needs apt-get (a Debian-based system), or --debs DIR holding the "
                        f"packages: {', '.join(p.name for p in PACKAGES)}") from exc
    errors = [line for line in result.stderr.splitlines() if line.startswith("E:")]
    return result.returncode == 0, (errors[-1] if errors else result.stderr.strip()[-300:])


def _download(pkg: Package, debs: Path, allow_other_versions: bool, log: Callable[[str], None]) -> Path:
    """``apt-get download name=version`` into ``debs`` (reusing an earlier download); see the version policy."""
    cached = _find_deb(debs, pkg, pkg.version)
    if cached is not None:
        return cached
    log(f"downloading {pkg.name} {pkg.version}")
    ok, message = _apt_download(f"{pkg.name}={pkg.version}", debs)
    if not ok and "Unable to locate package" in message and os.geteuid() == 0:
        log("package lists are missing or stale: running apt-get update")
        _run(["apt-get", "update"], "update the package lists")
        ok, message = _apt_download(f"{pkg.name}={pkg.version}", debs)
    if not ok and "Unable to locate package" in message:
        raise UserError(f"apt cannot find {pkg.name}: run 'sudo apt-get update' (and check that Debian's main "
                        "archive is in your apt sources), then fetch again")
    if not ok and allow_other_versions:
        log(f"{pkg.name} {pkg.version} is not served; taking the archive's version (--allow-other-versions)")
        ok, message = _apt_download(pkg.name, debs)
        found = _find_deb(debs, pkg, None) if ok else None
    else:
        found = _find_deb(debs, pkg, pkg.version) if ok else None
    if not ok and "was not found" in message:
        raise UserError(f"the Debian archive no longer serves {pkg.name} {pkg.version}, the pinned version; "
                        "rerun with --allow-other-versions to use the version it serves (recorded in the manifest)")
    if found is None:
        raise UserError(f"could not download {pkg.name}: {message}")
    return found


def _locate(pkg: Package, debs: Path, debs_dir: Path | None, allow: bool, log: Callable[[str], None]) -> Path:
    if debs_dir is None:
        return _download(pkg, debs, allow, log)
    found = _find_deb(debs_dir, pkg, pkg.version) or (_find_deb(debs_dir, pkg, None) if allow else None)
    if found is None:
        raise UserError(f"no {pkg.name}_{pkg.version}_*.deb in {debs_dir} (pinned version {pkg.version})")
    return found


def _check_deb(path: Path, pkg: Package, allow_other_versions: bool) -> dict[str, Any]:
    """Check the package name, version policy and (for the pinned build) the .deb's sha256."""
    fields = deb_fields(path)
    if fields.get("Package") != pkg.name:
        raise UserError(f"{path} is package {fields.get('Package')!r}, expected {pkg.name}")
    version, sha = fields.get("Version", "?"), sha256_file(path)
    if version != pkg.version and not allow_other_versions:
        raise UserError(f"{path} has version {version}, pinned is {pkg.version} (use --allow-other-versions)")
    pinned_build = version == pkg.version and fields.get("Architecture") in ("all", "amd64")
    if pinned_build and sha != pkg.deb_sha256:
        raise UserError(f"{path}: sha256 {sha} differs from the pinned {pkg.deb_sha256}; the download is corrupt "
                        "(delete it and fetch again)")
    return {"name": pkg.name, "version": version, "pinned_version": pkg.version,
            "architecture": fields.get("Architecture"), "deb": path.name, "deb_sha256": sha}


# --- packages -> text ---------------------------------------------------------------------------------------
def extract_text(pkg: Package, root: Path) -> str:
    """The cleaned text of one unpacked package (``root`` is where ``dpkg-deb -x`` put its files)."""
    try:
        if pkg.name == "r-cran-janeaustenr":
            db = read_lazyload_db(root / _R_LIB / "janeaustenr" / "data" / "Rdata")
            return clean_text("\n\n".join(austen_lines_to_text(db[novel].value) for novel in AUSTEN_NOVELS))
        if pkg.name == "r-cran-tokenizers":
            db = read_lazyload_db(root / _R_LIB / "tokenizers" / "data" / "Rdata")
            return clean_text(strip_gutenberg(db["mobydick"].value[0]))
        confs = sorted((root / _SWORD_ROOT / "mods.d").glob("*.conf"))
        if len(confs) != 1:
            raise SwordError(f"expected one module configuration in {pkg.name}, found {len(confs)}")
        return clean_text(read_module_text(read_conf(confs[0], root / _SWORD_ROOT)))
    except (RDataError, SwordError, KeyError, OSError, ValueError) as exc:
        raise UserError(f"cannot extract text from {pkg.name}: {exc}") from exc


def _write_atomic(path: Path, data: bytes) -> None:
    """``write_atomic``, readable by every user of a shared cache (0644, whatever the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=0o644)


def fetch_corpus(
    cache_dir: Path,
    *,
    allow_other_versions: bool = False,
    debs_dir: Path | None = None,
    packages: tuple[Package, ...] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Download (or take from ``debs_dir``), unpack and extract every package; write texts and the manifest."""
    root = Path(cache_dir).expanduser() / "debian"
    debs = root / "debs"
    try:
        debs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the cache folder {debs}: {exc.strerror or exc}") from exc
    package_rows, source_rows = [], []
    for pkg in packages or PACKAGES:
        deb = _locate(pkg, debs, debs_dir, allow_other_versions, log)
        row = _check_deb(deb, pkg, allow_other_versions)
        with tempfile.TemporaryDirectory(prefix="unpack-", dir=root) as unpacked:
            extract_deb(deb, Path(unpacked))
            text = extract_text(pkg, Path(unpacked)).encode("utf-8")
        _write_atomic(root / "texts" / f"{pkg.source}.txt", text)
        sha = hashlib.sha256(text).hexdigest()
        package_rows.append(row)
        source_rows.append({"name": pkg.source, "package": pkg.name, "version": row["version"],
                            "file": f"texts/{pkg.source}.txt", "bytes": len(text), "sha256": sha,
                            "pinned_sha256": pkg.text_sha256 or None,
                            "matches_pin": sha == pkg.text_sha256 if pkg.text_sha256 else None})
        log(f"  {pkg.source:<9} {len(text) / 1e6:6.2f} MB  from {pkg.name} {row['version']}  sha256 {sha[:16]}...")
    manifest = {"format": MANIFEST_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "version_policy": "allow-other-versions" if allow_other_versions else "pinned",
                "packages": package_rows, "sources": source_rows,
                "total_bytes": sum(r["bytes"] for r in source_rows)}
    _write_atomic(root / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest


def debian_sources(cache_dir: Path) -> list[Source]:
    """The fetched corpus as sources, each checked against the sha256 the manifest recorded."""
    root = Path(cache_dir).expanduser() / "debian"
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise UserError(f"no Debian corpus in {root}: run 'sfplus data fetch' first (or pass --cache-dir)")
    try:
        manifest = json.loads(manifest_path.read_text())
        rows = manifest["sources"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{manifest_path} is unreadable ({exc}); run 'sfplus data fetch' again") from exc
    sources = []
    for row in rows:
        path = root / row["file"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{path} is missing ({exc.strerror}); run 'sfplus data fetch' again") from exc
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise UserError(f"{path} does not match the sha256 in {manifest_path}; run 'sfplus data fetch' again")
        sources.append(Source(name=row["name"], text=data.decode("utf-8"), origin=f"{row['package']}={row['version']}",
                              sha256=row["sha256"]))
    return sources
