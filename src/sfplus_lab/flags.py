"""Command-line flags generated from config dataclasses: each field's name, type, default and help live in
one place, the field and the docstring written under it.

``flags_for(cls, section)`` turns every field of a dataclass into a :class:`Flag` (``--field-name``, or a
name from ``renames``), its kind read from the type annotation and its help from the field's docstring.
Values reach the program as text and are parsed by :func:`parse_value`, so a bad value is one
``UserError`` line naming the flag (argparse's own errors would print the whole usage).
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

from .errors import UserError
from .optim_factory import OFF  # the text that turns a safeguard off

__all__ = ["Flag", "add_field_arguments", "field_docs", "flags_for", "parse_value"]

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "0")


@dataclass(frozen=True, slots=True)
class Flag:
    """One flag: which config field it sets and how its text is parsed."""

    flag: str
    section: str
    field: str
    kind: str
    """int, count (an int that takes k/M/G), float, float|off, bool, str or floats (comma-separated)."""
    help: str
    metavar: str

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal written under it), whitespace collapsed."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value,
                                                                                                   str):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _kind(hint: Any) -> str | None:
    """The flag kind of a type annotation; None for one a flag cannot take (lists, nested configs)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if set(args) == {float, str}:
            return "float|off"
        hint = args[0] if len(args) == 1 else None
        args, origin = list(typing.get_args(hint)), typing.get_origin(hint)
    if origin is tuple and args and all(a is float for a in args):
        return "floats"
    return {int: "int", float: "float", bool: "bool", str: "str"}.get(hint)


def flags_for(
    cls: type, section: str, *, renames: dict[str, str] | None = None, kinds: dict[str, str] | None = None,
    skip: tuple[str, ...] = (), defaults: Any = None, notes: dict[str, str] | None = None,
    default_notes: dict[str, str] | None = None, metavars: dict[str, str] | None = None,
) -> list[Flag]:
    """A flag per field of dataclass ``cls`` (config section ``section``), in field order.

    ``renames``: field -> flag for the few whose flag is not ``--field-name``; ``kinds``: field -> kind where
    the annotation is not enough (``count``); ``skip``: fields set some other way; ``defaults``: an instance
    whose values the help states as "(default: ...)" (None values are not stated: the docstring says what
    None means); ``notes``: text appended to a field's help; ``default_notes``: said after its default;
    ``metavars``: field -> metavar where the kind's (N, X, NAME, ...) says too little.
    """
    renames, kinds, notes = renames or {}, kinds or {}, notes or {}
    default_notes, metavars = default_notes or {}, metavars or {}
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = kinds.get(f.name) or _kind(hints[f.name])
        if kind is None:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag kind for {hints[f.name]!r}; skip it or give its kind")
        help_text = docs.get(f.name)
        if not help_text:
            raise TypeError(f"{cls.__name__}.{f.name} has no docstring to be its flag's help")
        help_text = _plain(help_text)
        if f.name in notes:
            help_text = f"{help_text} {notes[f.name]}"
        if defaults is not None and getattr(defaults, f.name) is not None:
            note = f", {default_notes[f.name]}" if f.name in default_notes else ""
            help_text = f"{help_text} (default: {_show(getattr(defaults, f.name))}{note})"
        flag = renames.get(f.name, "--" + f.name.replace("_", "-"))
        metavar = metavars.get(f.name) or _METAVARS[kind]
        out.append(Flag(flag, section, f.name, kind, help_text.replace("%", "%%"), metavar))
    return out


_METAVARS = {"int": "N", "count": "N", "float": "X", "float|off": "X", "bool": "BOOL", "str": "NAME", "floats": "X,Y"}


def _plain(text: str) -> str:
    """A docstring as help text: reST roles and double backquotes dropped (``:func:`x``` -> x)."""
    return re.sub(r":\w+:`([^`]*)`", r"\1", text).replace("``", "")


def _show(value: Any, sep: str = ",") -> str:
    if isinstance(value, tuple):
        return sep.join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def add_field_arguments(
    parser: argparse.ArgumentParser, cls: type, names: tuple[str, ...], *, defaults: Any = None,
    default_notes: dict[str, str] | None = None, options: dict[str, dict[str, Any]] | None = None,
) -> None:
    """``--field-name`` for each field in ``names`` of dataclass ``cls``, parsed by argparse (lists as
    ``nargs="+"``, numbers with their type, from the annotation), default None so that only typed flags
    override; the help is the field's docstring plus "(default: ...)" from ``defaults`` and
    ``default_notes``. ``options``: field -> further ``add_argument`` keywords (choices, metavar, nargs)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    default_notes, options = default_notes or {}, options or {}
    for name in names:
        hint = hints[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
            hint = args[0]
        kwargs: dict[str, Any] = {}
        if typing.get_origin(hint) in (tuple, list, collections.abc.Sequence):
            kwargs["nargs"], hint = "+", typing.get_args(hint)[0]
        if hint in (int, float):
            kwargs["type"] = hint
        help_text = _plain(docs[name])
        if defaults is not None:
            note = f", {default_notes[name]}" if name in default_notes else ""
            help_text = f"{help_text} (default: {_show(getattr(defaults, name), sep=' ')}{note})"
        kwargs.update(options.get(name, {}))
        parser.add_argument("--" + name.replace("_", "-"), default=None, help=help_text.replace("%", "%%"), **kwargs)


def parse_value(flag: str, kind: str, text: str) -> Any:
    """The value of ``flag``'s text, or a UserError saying what the flag takes."""
    text = text.strip()
    if kind == "float|off" and text.lower() == OFF:
        return OFF
    if kind == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise UserError(f"{flag} needs true or false, got {text!r}")
    try:
        if kind == "int":
            return int(text)
        if kind in ("float", "float|off"):
            return float(text)
        if kind == "floats":
            return tuple(float(v) for v in text.split(","))
        if kind == "count":
            scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
            value = float(text[:-1] if scale > 1 else text) * scale
            if value != int(value):
                raise ValueError
            return int(value)
    except ValueError:
        what = {"int": "an integer", "count": "an integer", "floats": "numbers separated by commas"}
        hint = " or off" if kind == "float|off" else ""
        raise UserError(f"{flag} needs {what.get(kind, 'a number')}{hint}, got {text!r}") from None
    return text
