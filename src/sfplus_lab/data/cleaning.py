"""Text normalisation shared by every source, and the recipe for the built-in excerpts.

Why one place: the sha256 recorded for each text is of the cleaned text, so cleaning must be identical
everywhere (fetch, user files, the built-in texts) for the hashes to mean anything.
"""

from __future__ import annotations

import re

__all__ = ["austen_lines_to_text", "builtin_from_sources", "clean_text", "strip_gutenberg"]

_BLANK_RUNS = re.compile(r"\n{3,}")
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE)


def clean_text(text: str) -> str:
    """Unix newlines, no BOM, no trailing spaces, at most one blank line in a row, one final newline."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_RUNS.sub("\n\n", text).strip("\n")
    return text + "\n" if text else ""


def strip_gutenberg(text: str) -> str:
    """Keep only the book between Project Gutenberg's START and END lines (the licence is not prose)."""
    start, end = _GUTENBERG_START.search(text), _GUTENBERG_END.search(text)
    if start is None or end is None or end.start() < start.end():
        raise ValueError("no Project Gutenberg START/END markers found")
    return text[start.end() : end.start()]


def austen_lines_to_text(lines: list[str | None]) -> str:
    """janeaustenr stores each novel as one string per printed line ('' between paragraphs)."""
    return clean_text("\n".join(line or "" for line in lines))


def mobydick_chapters(text: str, first: int, last: int) -> str:
    """Chapters ``first``..``last`` of the cleaned Moby Dick text (the body, not the table of contents)."""
    heads = list(re.finditer(r"^CHAPTER (\d+)\. ", text, re.MULTILINE))
    body = [m for m in heads if int(m.group(1)) == 1][-1].start()  # the last 'CHAPTER 1.' is the body's
    body_heads = [m for m in heads if m.start() >= body]
    start = next(m.start() for m in body_heads if int(m.group(1)) == first)
    after = [m.start() for m in body_heads if int(m.group(1)) == last + 1]
    return clean_text(text[start : after[0] if after else len(text)])


def builtin_from_sources(texts: dict[str, str]) -> dict[str, str]:
    """The built-in texts, derived from the fetched full texts (so their provenance can be re-checked).

    ``austen-persuasion``: all of Persuasion. ``melville-mobydick``: Moby Dick, chapters 1-22 (to the Pequod
    sailing). Two authors so a default run reports two per-source validation losses.
    """
    return {
        "austen-persuasion": texts["austen-persuasion"],
        "melville-mobydick": mobydick_chapters(texts["melville-mobydick"], 1, 22),
    }
