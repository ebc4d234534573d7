"""CLI conventions every command shares: global options before or after the command, and
errors as JSON under --json (with nothing half-written on stdout)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from winlayer import _common
from winlayer.cli import COMMANDS, ENVIRONMENT, build_parser

from .conftest import REPO, Cli
from .imagebuild import docker_save
from .layerbuild import base_layer, f, layer_tar


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "ls"],
        ["ls", "--json"],
        ["images", "ls", "--json"],
        ["--json", "images", "ls"],
    ],
)
def test_global_options_work_before_and_after_the_command(cli: Cli, argv: list[str]) -> None:
    done = cli(*argv)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == []


def test_home_after_the_command(cli: Cli, tmp_path: Path) -> None:
    tar = tmp_path / "l.tar"
    tar.write_bytes(base_layer())
    other = tmp_path / "other"
    done = cli("import", "a", str(tar), "--home", str(other))
    assert done.returncode == 0, done.stderr.decode()
    assert (other / "a").is_dir()  # the home after the command wins over the one before
    assert not (cli.home / "a").exists()


def test_an_option_before_the_command_is_not_undone_after_it(cli: Cli) -> None:
    done = cli("--json", "images", "ls", "-q")
    assert done.returncode == 0
    assert json.loads(done.stdout) == []


def test_errors_are_json_under_json(cli: Cli, tmp_path: Path) -> None:
    done = cli("inspect", "nosuch", "--json")
    assert done.returncode == 1
    assert done.stdout == b""
    assert json.loads(done.stderr) == {
        "error": {
            "type": "LayerNotFound",
            "message": "layer not found: 'nosuch'",
            "layer_id": "nosuch",
        }
    }
    plain = cli("inspect", "nosuch")
    assert plain.stderr == b"winlayer: error: layer not found: 'nosuch'\n"


def test_a_tar_error_carries_entry_and_offset(cli: Cli, tmp_path: Path) -> None:
    good = bytearray(layer_tar([f("Files/a.txt", b"a" * 2000), f("Files/b.txt", b"b")]))
    second = good.index(b"Files/b.txt")
    good[second] ^= 0x01  # the second header's checksum no longer matches
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(good))
    done = cli("--json", "tar", "ls", str(bad))
    assert done.returncode == 1
    assert done.stdout == b""  # no half document
    error = json.loads(done.stderr)["error"]
    assert error["type"] == "InvalidLayer"
    assert "checksum" in error["message"]
    assert error["offset"] == second - second % 512


def test_a_usage_error_is_json_too(cli: Cli) -> None:
    done = cli("--json", "push", "app:1", "127.0.0.1:1/x", "--jobs", "0")
    assert done.returncode == 2
    error = json.loads(done.stderr)["error"]
    assert error == {"type": "UsageError", "message": "--jobs must be at least 1"}


def test_listings_print_their_header_on_an_empty_store(cli: Cli) -> None:
    assert cli("ls").stdout.decode().split() == ["ID", "PARENT", "SIZE", "MODE"]
    assert cli("images", "ls").stdout.decode().split() == ["TAGS", "IMAGE", "ID", "CREATED", "SIZE"]


def test_quiet_listings_print_only_ids(cli: Cli, tmp_path: Path) -> None:
    tar = tmp_path / "l.tar"
    tar.write_bytes(base_layer())
    for layer_id in ("b", "a"):
        assert cli("import", layer_id, str(tar)).returncode == 0
    assert cli("ls", "-q").stdout == b"a\nb\n"
    assert json.loads(cli("-q", "--json", "ls").stdout) == ["a", "b"]
    archive = tmp_path / "image.tar"
    archive.write_bytes(docker_save([base_layer()], tags=["app:1"])[0])
    assert cli("load", str(archive)).returncode == 0
    (image,) = cli.json("images", "ls")  # type: ignore[misc]
    assert cli("images", "ls", "-q").stdout.decode() == str(image["id"])[7:19] + "\n"


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [(["lss"], b"unknown command 'lss'; did you mean 'ls'?"),
     (["images", "lss"], b"unknown command 'lss'; did you mean 'ls'?"),
     (["exprot", "x"], b"did you mean 'export'?")],
)  # fmt: skip
def test_a_mistyped_command_suggests_the_closest(
    cli: Cli, argv: list[str], suggestion: bytes
) -> None:
    done = cli(*argv)
    assert done.returncode == 2
    assert suggestion in done.stderr


def test_pack_of_a_missing_folder_says_so(cli: Cli, tmp_path: Path) -> None:
    done = cli("pack", str(tmp_path / "nonexistent"), "-o", str(tmp_path / "x.tar"))
    assert done.returncode == 1
    assert done.stderr.decode() == (
        f"winlayer: error: [Errno 2] no such folder: '{tmp_path / 'nonexistent'}'\n"
    )
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="the hcs backend runs there")
def test_backend_hcs_on_this_platform_names_the_option_not_the_variable(cli: Cli) -> None:
    done = cli("--backend", "hcs", "ls")
    assert done.returncode == 1
    assert b"--backend portable" in done.stderr
    assert b"WINLAYER_BACKEND" not in done.stderr
    cli.env["WINLAYER_BACKEND"] = "hcs"
    from_env = cli("ls")
    assert b"unset WINLAYER_BACKEND" in from_env.stderr


@pytest.mark.parametrize("argv", [["import", "x", "-"], ["load", "-"]])
def test_a_tar_from_a_terminal_is_refused_at_once(cli: Cli, argv: list[str]) -> None:
    pty = pytest.importorskip("pty", reason="needs pseudo-terminals")
    main, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "winlayer", "--home", str(cli.home), *argv],
            stdin=secondary,
            capture_output=True,
            env=cli.env,
            timeout=30,
            check=False,
        )
    finally:
        os.close(main)
        os.close(secondary)
    assert done.returncode == 2
    assert b"refusing to read a tar from a terminal" in done.stderr


def test_inspect_text_has_no_python_reprs(cli: Cli, tmp_path: Path) -> None:
    tar = tmp_path / "l.tar"
    tar.write_bytes(base_layer())
    assert cli("import", "base", str(tar)).returncode == 0
    assert cli("create", "box", "--parent", "base", "--read-write").returncode == 0
    fields = dict(
        line.split(None, 1) for line in cli("inspect", "base").stdout.decode().splitlines()
    )
    assert (fields["parent"], fields["read_write"], fields["parents"]) == ("-", "no", "-")
    box = dict(line.split(None, 1) for line in cli("inspect", "box").stdout.decode().splitlines())
    assert (box["parent"], box["read_write"]) == ("base", "yes")
    assert box["parents"] == str(cli.home / "base")  # the parent folders, comma-joined
    for text in (*fields.values(), *box.values()):
        assert text not in ("None", "True", "False")
        assert not text.startswith("[")


def test_every_environment_variable_is_documented(cli: Cli) -> None:
    """Each variable the package or its native code reads is in `winlayer --help` and the
    README; nothing is listed that nothing reads."""
    package = REPO / "python" / "winlayer"
    sources = [*package.glob("*.py"), *(REPO / "native").rglob("*.[ch]pp")]
    read = set()
    for path in sources:
        text = path.read_text(encoding="utf-8")
        read |= set(re.findall(r'environ\.get\("([A-Z_]+)"', text))
        read |= set(re.findall(r'getenv\("([A-Z_]+)"\)', text))
        read |= set(re.findall(r'^[A-Z_]*VAR = "([A-Z_]+)"', text, re.M))
        read |= set(re.findall(r'kEnv\w* = "([A-Z_]+)"', text))
    read -= {"SYSTEMROOT"}  # Windows' own folder (where vmcompute.dll is), not a setting
    read |= {"XDG_DATA_HOME"}  # read for _common.data_root by platformdirs
    assert read == set(ENVIRONMENT)
    help_text = cli("--help").stdout.decode()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ENVIRONMENT:
        assert name in help_text
        assert f"| `{name}` |" in readme


def test_a_binary_input_names_its_entry_with_bytes_escaped_readably(
    cli: Cli, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04\xe6\xff" + b"\0" * 1024)
    result = cli("tar", "ls", str(junk))
    assert result.returncode == 1
    line = result.stderr.decode()
    assert "entry 'PK\\x03\\x04\\xe6\\xff'" in line, line
    assert "\\udc" not in line


def test_export_to_a_missing_folder_names_the_file_asked_for(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "base.tar").write_bytes(base_layer())
    assert cli("import", "base", str(tmp_path / "base.tar")).returncode == 0
    wanted = tmp_path / "nodir" / "x.tar"
    result = cli("export", "base", "-o", str(wanted))
    assert result.returncode == 1
    assert str(wanted) in result.stderr.decode()
    assert "partial" not in result.stderr.decode()
    assert cli.json("export", "base", "-o", str(tmp_path / "x.tar")) == {
        "id": "base",
        "output": str(tmp_path / "x.tar"),
        "size": (tmp_path / "x.tar").stat().st_size,
    }


def test_home_help_says_where_the_default_store_is_on_each_os() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "winlayer", "--help"],
        capture_output=True,
        env={**os.environ, "COLUMNS": "200"},
        check=True,
    )
    text = " ".join(done.stdout.decode().split())
    assert "Linux: ~/.local/share/winlayer ($XDG_DATA_HOME)" in text
    assert "macOS: ~/Library/Application Support/winlayer" in text
    assert "Windows: C:\\ProgramData\\winlayer" in text


def test_the_data_folder_the_help_names_is_the_one_in_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if sys.platform == "win32":
        monkeypatch.delenv("PROGRAMDATA", raising=False)
        expected = _common.data_roots_by_os()["Windows"]
    else:
        name = "macOS" if sys.platform == "darwin" else "Linux"
        shown = _common.data_roots_by_os()[name].removesuffix(" ($XDG_DATA_HOME)")
        expected = shown.replace("~", str(tmp_path), 1)
    assert str(_common.data_root()) == expected


def _complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell completion offers for `line` (argcomplete's protocol: the shell's
    line in COMP_LINE, the candidates written to a file, separated by vertical tabs)."""
    out = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
    }
    done = subprocess.run(
        [sys.executable, "-m", "winlayer"], capture_output=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return out.read_text().split("\v")


def test_shell_completion_offers_commands_and_options(tmp_path: Path) -> None:
    assert _complete("winlayer im", tmp_path) == ["images", "import"]
    assert _complete("winlayer images i", tmp_path) == ["inspect", "install-base"]
    assert _complete("winlayer load --pl", tmp_path) == ["--platform "]  # a space: complete
    version = subprocess.run(
        [sys.executable, "-m", "winlayer", "--version"], capture_output=True, check=True
    )
    assert version.stdout.decode().startswith("winlayer ")


def test_verbose_logs_each_layer_and_quiet_only_the_result(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    archive.write_bytes(docker_save([base_layer()], tags=["app:1"])[0])
    loud = cli("-v", "load", str(archive))
    assert loud.returncode == 0, loud.stderr
    logged = loud.stderr.decode()
    assert re.search(r"winlayer: INFO: imported layer [0-9a-f]{12} \(diffID sha256:", logged)
    assert re.search(r"in \d+\.\d\d s", logged)
    quiet = Cli(tmp_path / "quiet", tmp_path / "base")("-q", "load", str(archive))
    assert quiet.returncode == 0
    assert quiet.stderr == b""
    assert quiet.stdout.decode().startswith("Loaded image: app:1")
    plain = Cli(tmp_path / "plain", tmp_path / "base")("load", str(archive))
    assert b"INFO" not in plain.stderr


def test_an_unknown_backend_variable_is_one_line_not_a_traceback(cli: Cli) -> None:
    cli.env["WINLAYER_BACKEND"] = "bogus"
    done = cli("ls")
    assert done.returncode == 1
    assert done.stderr.decode() == (
        "winlayer: error: unknown winlayer backend 'bogus' (from $WINLAYER_BACKEND); "
        "choose one of: hcs, portable\n"
    )
    as_json = cli("--json", "ls")
    assert as_json.returncode == 1
    assert json.loads(as_json.stderr)["error"]["type"] == "BackendUnavailable"
    assert as_json.stdout == b""
    version = cli("--version")  # says which backend, without failing
    assert version.returncode == 0
    assert b"backend: none: unknown winlayer backend 'bogus'" in version.stdout


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    for word in words:
        (choices,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = choices.choices[word]
    return parser


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_parser_for_a_command_line_is_complete_for_the_command_it_names(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    words = name.split()
    full = _subparser(build_parser(), words).format_help()
    for argv in ([*words, "--help"], ["--json", *words, "--help"]):
        assert _subparser(build_parser(argv), words).format_help() == full
    others = [other for other in COMMANDS if other.split()[0] != words[0]]
    assert not _subparser(build_parser(words), others[0].split())._get_optional_actions()[1:]
