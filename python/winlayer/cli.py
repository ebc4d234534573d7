"""The ``winlayer`` command (also ``python -m winlayer``).

Results go to stdout (aligned text, or one JSON document with ``--json``); progress and
errors go to stderr. Exit codes: 0 success, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, backend
from .errors import WinlayerError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], Any]


class Arg:
    """One argparse argument of a subcommand: ``Arg("--parent", metavar="ID")``."""

    def __init__(self, *flags: str, **options: Any) -> None:
        self.flags = flags
        self.options = options


_COMMANDS: dict[str, tuple[Handler, str, tuple[Arg, ...]]] = {}


def command(name: str, help: str, *arguments: Arg) -> Callable[[Handler], Handler]:
    """Register ``winlayer NAME``: the decorated function runs it and returns nothing;
    it prints through :func:`emit`."""

    def register(fn: Handler) -> Handler:
        _COMMANDS[name] = (fn, help, arguments)
        return fn

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="winlayer",
        description="Windows container image layers: import, export, mount and inspect them.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    parser.add_argument("--home", metavar="DIR", help="the layer store (default: per-user)")
    parser.add_argument("--backend", choices=("portable", "hcs"), help="override the backend")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logs, tracebacks")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_fn, help_text, arguments) in sorted(_COMMANDS.items()):
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        for argument in arguments:
            sub.add_argument(*argument.flags, **argument.options)
    return parser


def _version_text() -> str:
    return f"winlayer {__version__} (backend: {backend})"


def emit(args: argparse.Namespace, result: Any, text: str) -> None:
    """Print a command's result: JSON with --json, else the human text."""
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("winlayer: error: a COMMAND is required\n")
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING,
        format="winlayer: %(levelname)s: %(message)s",
    )
    fn = _COMMANDS[args.command][0]
    try:
        fn(args)
    except KeyboardInterrupt:
        sys.stderr.write("winlayer: interrupted\n")
        return 130
    except (WinlayerError, OSError, ValueError) as exc:
        if args.verbose:
            logging.exception("%s failed", args.command)
        sys.stderr.write(f"winlayer: error: {exc}\n")
        return EXIT_FAILURE
    return EXIT_OK
