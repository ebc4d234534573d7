"""The native sources stay portable to MSVC: no GNU-only construct in them (checked here by
reading them), and ci/wine/run.sh builds the Windows sources with the g++ warnings that
match MSVC's /W4, -pedantic-errors and -Werror (checked by compiling, with those flags,
a snippet of each hazard: each must fail the build)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, require_tools

SOURCES = sorted(
    p
    for folder in ("native", "ci/wine")
    for p in (REPO / folder).rglob("*")
    if p.suffix in (".cpp", ".hpp", ".h")
)
RUN_SH = REPO / "ci" / "wine" / "run.sh"
MINGW = "x86_64-w64-mingw32-g++-posix"

# GNU spellings MSVC does not know. __attribute__ may stand in a macro (one #define that
# MSVC's branch spells its own way), never in code.
GNU_ONLY = {
    "__attribute__": r"\b__attribute__\b",
    "typeof": r"\b(?:__typeof__|__typeof|typeof)\b",
    "__extension__": r"\b__extension__\b",
    "__builtin_": r"\b__builtin_\w+",
    "GNU inline asm": r"\b(?:__asm__|asm)\s*(?:volatile\s*)?\(",
    "#pragma GCC": r"#\s*pragma\s+GCC\b",
    "case range": r"\bcase\b[^:\n]*\.\.\.",
}


def _code(text: str) -> str:
    """`text` with comments and string/char literals blanked (line breaks kept)."""
    pattern = r'//[^\n]*|/\*.*?\*/|R"(\w*)\(.*?\)\1"|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\''
    return re.sub(pattern, lambda m: re.sub(r"[^\n]", " ", m[0]), text, flags=re.S)


def gnu_only(text: str, filename: str) -> list[str]:
    """Each GNU-only construct in C++ source `text`: "file:line: what"."""
    findings = []
    in_define = False
    for number, line in enumerate(_code(text).splitlines(), 1):
        in_define = in_define or re.match(r"\s*#\s*define\b", line) is not None
        for what, pattern in GNU_ONLY.items():
            if re.search(pattern, line) and not (what == "__attribute__" and in_define):
                findings.append(f"{filename}:{number}: {what}")
        in_define = in_define and line.rstrip().endswith("\\")
    return findings


def test_no_gnu_only_construct_in_the_native_sources() -> None:
    assert SOURCES
    findings = [f for p in SOURCES for f in gnu_only(p.read_text(), str(p.relative_to(REPO)))]
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("int f() __attribute__((pure));\n", ["x.cpp:1: __attribute__"]),
        ("#define PURE __attribute__((pure))\nint f() PURE;\n", []),
        (
            "#define PURE \\\n  __attribute__((pure))\nint g() __attribute__((cold));\n",
            ["x.cpp:3: __attribute__"],
        ),
        ('// __attribute__ in a comment\nauto s = "__attribute__";\n', []),
        ("typeof(x) y = x;\n", ["x.cpp:1: typeof"]),
        ("int n = __builtin_popcount(x);\n", ["x.cpp:1: __builtin_"]),
        ('asm volatile ("nop");\n', ["x.cpp:1: GNU inline asm"]),
        ("switch (c) { case 1 ... 3: break; }\n", ["x.cpp:1: case range"]),
        ("#pragma GCC diagnostic push\n#pragma once\n", ["x.cpp:1: #pragma GCC"]),
        ("v.push_back({a, b});\n", []),
    ],
)
def test_the_check_finds_gnu_only_constructs(source: str, expected: list[str]) -> None:
    assert gnu_only(source, "x.cpp") == expected


def run_sh_flags() -> list[str]:
    match = re.search(r'^export flags="([^"]*)"', RUN_SH.read_text(), re.M)
    assert match, 'ci/wine/run.sh must keep its compiler flags in export flags="..."'
    return [f for f in shlex.split(match[1]) if not f.startswith("-I")]


def test_the_wine_build_warns_as_msvc_w4_would_and_fails_on_it() -> None:
    flags = run_sh_flags()
    for flag in ("-Wall", "-Wextra", "-Wshadow", "-Wconversion", "-pedantic-errors", "-Werror"):
        assert flag in flags, flag


HAZARDS = {
    "vla": "void f(int n) { int a[n]; a[0] = 0; (void)a; }",
    "statement-expression": "int f() { return ({ int x = 1; x; }); }",
    "zero-size-array": "struct S { int n; int tail[0]; };",
    "shadow": "int f(int x) { { int x = 2; return x; } }",
    "narrowing-size_t": "#include <cstddef>\nunsigned f(std::size_t n) { return n; }",
    "narrowing-double": "float f(double d) { return d; }",
    "unused-parameter": "int f(int unused) { return 0; }",
    "sign-compare": "bool f(int a, unsigned b) { return a < b; }",
}


def _syntax_check(source: Path, text: str) -> subprocess.CompletedProcess[str]:
    """`text` compiled (syntax only) by mingw-w64 with ci/wine/run.sh's flags."""
    compiler = shutil.which(MINGW)
    require_tools([] if compiler else [MINGW], "apt-get install g++-mingw-w64-x86-64-posix")
    assert compiler
    source.write_text(text)
    return subprocess.run(
        [compiler, *run_sh_flags(), "-fsyntax-only", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("hazard", sorted(HAZARDS))
def test_each_hazard_fails_the_wine_build(tmp_path: Path, hazard: str) -> None:
    result = _syntax_check(tmp_path / f"{hazard}.cpp", HAZARDS[hazard] + "\n")
    assert result.returncode != 0, f"{hazard} compiled with ci/wine/run.sh's flags"
    assert "error" in result.stderr


def test_a_clean_snippet_passes_the_wine_build(tmp_path: Path) -> None:
    """The hazards fail for what they are, not because the flags reject everything."""
    result = _syntax_check(
        tmp_path / "clean.cpp",
        "#include <windows.h>\n#include <cstddef>\n"
        "DWORD f(std::size_t n) { return static_cast<DWORD>(n); }\n",
    )
    assert result.returncode == 0, result.stderr
