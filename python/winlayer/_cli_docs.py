"""docs/cli.md, the CLI reference, generated from the parser: ``python -m winlayer._cli_docs
[FILE]`` writes it (default: stdout). tests/test_cli_docs.py fails when the file and the
parser drift apart. The JSON each command prints with ``--json`` is described here, in
:data:`JSON_OUTPUT` (a test checks that every command has its entry)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from ._cli_common import COMMANDS
from .cli import build_parser

#: The JSON conventions every command follows.
CONVENTIONS = """\
- One document on stdout, printed once the command succeeded; with `-q`, a listing is
  the JSON list of its ids.
- Digests and image ids are `sha256:<64 hex>`; layer ids are the store's folder names.
- `size` is always in bytes; times are ISO 8601 in UTC.
- An error is one object on stderr, `{"error": {"type", "message", ...}}`, with the
  fields the exception carries (`entry`, `offset`, `path`, `digest`, ...); exit code 1
  (2 for a usage error).
- `pull` and `push` without a terminal write one JSON line per change of a layer's state
  on stderr: `{"digest", "state", "done", "total"}`."""

_IMAGE = (
    '{"id": "sha256:<hex>", "tags": ["name:tag"], "created": TIME, "architecture": str, '
    '"os": str, "size": BYTES, "layers": ["sha256:<chain id>"]}'
)
_LAYER = (
    '{"id": str, "parent": str|null, "size": BYTES|null, "read_write": bool, '
    '"diff_id": "sha256:<hex>"|null, "created": TIME}'
)
_BUILT = (
    '{"id": "sha256:<hex>", "tag": "name:tag", "created": TIME, "size": BYTES, '
    '"layers": ["sha256:<chain id>"]}'
)
_REMOVED = '[{"Untagged": "name:tag"} | {"Deleted": "sha256:<hex>"}]'

#: The shape of each command's ``--json`` output.
JSON_OUTPUT = {
    "append": _BUILT,
    "changes": '[{"path": str, "kind": "A"|"C"|"D"}]',
    "commit": _BUILT,
    "create": _LAYER + ', plus "image": "sha256:<hex>" with --image',
    "df": '{"images"|"layers"|"sandboxes": {"total": int, "active": int, "size": BYTES, '
    '"reclaimable": BYTES}}',
    "du": '{"id": str, "size": BYTES}',
    "export": '{"id": str, "output": FILE, "size": BYTES} (nothing when the tar goes to stdout)',
    "export-rootfs": '{"image": "sha256:<hex>", "layer": str, "output": FILE, "size": BYTES}',
    "gc": '{"swept": [str]}',
    "images history": '[{"image": "sha256:<hex>"|null, "created": TIME, "created_by": str, '
    '"size": BYTES, "comment": str, ...}]',
    "images inspect": "[docker image inspect's object, plus Winlayer.ChainIDs]",
    "images install-base": '{"name": str, "version": str, "path": str}',
    "images ls": f"[{_IMAGE}]",
    "images mount": '{"image": "sha256:<hex>", "layer": str, "path": str}',
    "images restore": '{"restored": ["name:version"]}',
    "images rm": _REMOVED,
    "images tag": '{"id": "sha256:<hex>", "tag": "name:tag"}',
    "images unmount": '{"image": "sha256:<hex>"}',
    "import": '{"id": str, "parent": str|null, "size": BYTES, "diff_id": "sha256:<hex>"}',
    "inspect": _LAYER + ', plus "dir": str, "parents": [str], "mounts": int',
    "load": f'[{_IMAGE[:-1]}, "platform": {{"os": str, "architecture": str, ...}}}}]',
    "ls": f"[{_LAYER}]",
    "mount": '{"id": str, "path": str}',
    "pack": '{"output": FILE, "diff_id": "sha256:<hex>"}',
    "prune": '{"dry_run": bool, "images": ' + _REMOVED + ', "layers": [{"chain_id": '
    '"sha256:<hex>", "layer_id": str, "size": BYTES}], "size": BYTES}',
    "pull": '{"reference": str, "digest": "sha256:<hex>", "image_id": "sha256:<hex>", '
    '"tags": [str], "platform": {...}, "downloaded": bool, "layers": [{"digest": '
    '"sha256:<hex>", "state": str}]}',
    "push": '{"reference": str, "digest": "sha256:<hex>", "size": BYTES, "image_id": '
    '"sha256:<hex>", "layers": [{"digest": "sha256:<hex>", "state": str}]}',
    "rm": '{"removed": [str]}',
    "save": '{"images": [str], "output": FILE} (nothing when the archive goes to stdout)',
    "tar ls": '{"entries": [{"path": str, "type": str, "size": BYTES, ...}], "compression": '
    'str, "data_size": BYTES, "diff_id": "sha256:<hex>"}',
    "unmount": '{"id": str}',
    "verify": '[{"id": str, "diff_id": "sha256:<hex>", "ok": true}] (the layers that passed)',
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help text at a fixed width, so that the reference is the same on every terminal."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=88, max_help_position=30)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public way to walk its tree
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for name, sub in sorted(_subparsers(parser).items()):
        path = (*words, name)
        if " ".join(path) in COMMANDS:
            yield " ".join(path), sub
        yield from _walk(sub, path)


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = _Formatter
    return parser.format_help().rstrip()


def reference() -> str:
    """docs/cli.md's text."""
    parser = build_parser()
    parts = [
        "# winlayer command reference",
        "",
        "Generated from the parser by `python -m winlayer._cli_docs docs/cli.md`; do not "
        "edit by hand.",
        "",
        "## winlayer",
        "",
        "```text",
        _help(parser),
        "```",
        "",
        "## JSON output (`--json`)",
        "",
        CONVENTIONS,
        "",
        "`BYTES` is a size in bytes, `TIME` an ISO 8601 UTC time, `FILE` the path given.",
    ]
    for name, sub in _walk(parser):
        parts += [
            "",
            f"## winlayer {name}",
            "",
            "```text",
            _help(sub),
            "```",
            "",
            f"JSON: `{JSON_OUTPUT[name]}`",
        ]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    text = reference()
    if argv:
        with open(argv[0], "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
