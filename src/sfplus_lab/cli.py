"""The ``sfplus`` command line: a thin dispatcher to subcommand modules.

Each subcommand lives in its own module with two functions::

    def add_arguments(name: str, parser: argparse.ArgumentParser) -> None
    def run(name: str, args: argparse.Namespace) -> int   # the exit code

A :class:`sfplus_lab.errors.UserError` raised anywhere is printed as one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("sfplus_lab.train", "train a small GPT (ScheduleFree+ by default) and write metrics, plots, checkpoints"),
    "data": ("sfplus_lab.data.command", "fetch and build the public-domain corpus from Debian packages"),
    "bench": ("sfplus_lab.bench.command", "compare ScheduleFree+ with tuned schedules across token budgets"),
    "merge": ("sfplus_lab.averaging", "average checkpoints (uniform or online-to-batch weights)"),
    "export": ("sfplus_lab.averaging", "export a run's x weights as safetensors"),
    "predict": ("sfplus_lab.predict", "fit val_loss(t) = a/sqrt(t+b)+c early in a run and predict the final loss"),
}


def version() -> str:
    """The installed package's version (the library's own ``__version__`` when run from a source tree)."""
    from importlib import metadata

    try:
        return metadata.version("sfplus")
    except metadata.PackageNotFoundError:
        import sfplus

        return sfplus.__version__


def _own_errors(parser: argparse.ArgumentParser) -> None:
    """Record in every (sub)parser's defaults which parser it is, so that an unknown argument is reported with
    the usage of the command it was given to (``sfplus data fetch --out X`` shows fetch's usage, not sfplus's)."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _own_errors(child)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="sfplus", description="ScheduleFree+: train without tuning a learning rate.")
    parser.add_argument("--version", action="version", version=f"sfplus {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # subcommand not built yet
            raise
        modules[name] = module
        module.add_arguments(name, sub.add_parser(name, help=help_text, description=help_text))
    _own_errors(parser)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args.command, args) or 0)
    except UserError as exc:
        print(f"sfplus {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sfplus {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
