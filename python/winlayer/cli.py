"""The ``winlayer`` command (also ``python -m winlayer``).

Results go to stdout (aligned text, or one JSON document with ``--json``); progress bars
and errors go to stderr. Exit codes: 0 success, 1 failure, 2 usage error. Every failure
is one line naming what failed and where (``verify`` of several layers: one per bad
layer); ``-v`` adds the traceback. The commands are registered by the modules
``_cli_layers``, ``_cli_images``, ``_cli_registry``, ``_cli_build`` and ``_cli_rootfs``
(see ``_cli_common.command``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__, _cli_build, _cli_images, _cli_layers, _cli_registry, _cli_rootfs
from ._cli_common import (
    COMMANDS,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    FAILURES,
    Arg,
    Reported,
    UsageError,
    command,
    emit,
    open_driver,
    progress_bar,
    report,
    table,
)
from ._common import data_roots_by_os, lazy_module
from .backend import selected_name
from .errors import BackendUnavailable

if TYPE_CHECKING:
    import difflib
    import logging
else:
    difflib = lazy_module("difflib")
    logging = lazy_module("logging")

#: The command modules, imported for the commands they register.
COMMAND_MODULES = (_cli_layers, _cli_images, _cli_registry, _cli_build, _cli_rootfs)


class _Parser(argparse.ArgumentParser):
    """argparse, with a suggestion for a mistyped command (``lss`` -> ``ls``)."""

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong.group(2))
            close = difflib.get_close_matches(wrong.group(1), choices, n=1)
            if close:
                message = (
                    f"{message.split(':', maxsplit=1)[0]}: unknown command {wrong.group(1)!r}; "
                )
                message += f"did you mean {close[0]!r}?"
        super().error(message)


#: Every environment variable winlayer reads, with what it does (the README lists them too;
#: tests/test_cli_conventions.py checks both against the package's code).
ENVIRONMENT = {
    "WINLAYER_HOME": "the default layer store (else a per-user folder)",
    "WINLAYER_BACKEND": "hcs or portable: the backend when --backend is not given",
    "WINLAYER_BASE_IMAGES": "the portable backend's base-image folder",
    "WINLAYER_MAX_LAYER_SIZE": "bytes a compressed layer may expand to (default 1 TiB)",
    "WINLAYER_PORTABLE_MOUNT": "overlay, copy or auto: how portable sandboxes are viewed",
    "SOURCE_DATE_EPOCH": "the created time of commit/append/pack (reproducible images)",
    "DOCKER_CONFIG": "the folder of docker's config.json (registry credentials)",
    "XDG_DATA_HOME": "where the per-user store lives (Linux; default ~/.local/share)",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given ``argv``, only the commands it names get their
    arguments (adding all of them takes longer than ``--version`` or ``--help`` itself).
    A command is chosen only by its exact name, so every command ``argv`` can select is
    complete; the others still show in the list of commands."""
    named = None if argv is None else set(argv)
    width = max(map(len, ENVIRONMENT))
    epilog = "environment variables:\n" + "\n".join(
        f"  {name.ljust(width)}  {text}" for name, text in ENVIRONMENT.items()
    )
    parser = _Parser(
        prog="winlayer",
        description="Windows container image layers: import, export, mount and inspect them.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version_text())
    _global_options(parser, top_level=True)
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, Any] = {}
    for name, (_fn, help_text, arguments) in sorted(COMMANDS.items()):
        group, _, sub = name.partition(" ")
        if sub:
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(
                    dest="subcommand", metavar="SUBCOMMAND", required=True
                )
            target = groups[group].add_parser(sub, help=help_text, description=help_text)
        else:
            target = top.add_parser(name, help=help_text, description=help_text)
        target.set_defaults(command_name=name)
        if named is None or (group in named and (not sub or sub in named)):
            _global_options(target, top_level=False)
            for argument in arguments:
                target.add_argument(*argument.flags, **argument.options)
    return parser


def _global_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """The options every command takes, before or after its name (``winlayer ls --json``
    as ``winlayer --json ls``). After the name they default to nothing, so that they do not
    undo what was given before it."""

    def default(value: object) -> object:
        return value if top_level else argparse.SUPPRESS

    group = parser.add_argument_group("global options") if not top_level else parser
    group.add_argument("--home", metavar="DIR", default=default(None), help=_home_help())
    group.add_argument(
        "--backend",
        choices=("portable", "hcs"),
        default=default(None),
        help="override the backend",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print one JSON document"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log what the library does (each layer, timings), tracebacks",
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="errors and results only"
    )


def _home_help() -> str:
    """Where the default store is on each OS (from the code that decides it)."""
    where = "; ".join(f"{name}: {root}" for name, root in data_roots_by_os().items())
    return (
        f"the layer store (default: $WINLAYER_HOME, else windowsfilter in the data folder: {where})"
    )


def _version_text() -> str:
    try:
        backend = selected_name()
    except BackendUnavailable as exc:  # the commands that need a backend report it
        backend = f"none: {exc}"
    return f"winlayer {__version__} (backend: {backend})"


# -- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    completing = "_ARGCOMPLETE" in os.environ  # a shell asks for completions (see the README)
    parser = build_parser(None if completing else sys.argv[1:] if argv is None else argv)
    if completing:
        import argcomplete  # only then: it is not needed to run a command

        argcomplete.autocomplete(parser)
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
    fn = COMMANDS[args.command_name][0]
    try:
        fn(args)
    except UsageError as exc:
        report(args, exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("winlayer: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `winlayer export x | head`): not our failure.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Reported:
        return EXIT_FAILURE
    except FAILURES as exc:
        report(args, exc)
        return EXIT_FAILURE
    return EXIT_OK


__all__ = ["Arg", "command", "emit", "main", "open_driver", "progress_bar", "table"]
