"""FileSource / FileSink's Win32 code (\\\\?\\ long paths, UTF-8 -> UTF-16, errors), cross-
compiled with mingw-w64 and run under Wine together with the tar writer and reader."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import require_tools

REPO = Path(__file__).resolve().parent.parent
MINGW = shutil.which("x86_64-w64-mingw32-g++-posix")
WINE = (
    shutil.which("wine")
    or shutil.which("wine64")
    or ("/usr/lib/wine/wine64" if os.access("/usr/lib/wine/wine64", os.X_OK) else None)
)

PROGRAM = r"""
#include <cstdio>
#include <string>
#include <windows.h>
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/tar.hpp"
using namespace winlayer;

int main(int, char** argv) {
    // argv[1]: a Windows folder; build a path of 300+ characters with a non-ASCII name.
    std::string dir = std::string(argv[1]) + "\\t\xc3\xa9st-\xe6\x95\xb0";
    std::wstring wdir;
    wdir.resize(MultiByteToWideChar(CP_UTF8, 0, dir.c_str(), -1, nullptr, 0));
    MultiByteToWideChar(CP_UTF8, 0, dir.c_str(), -1, &wdir[0], (int)wdir.size());
    wdir.pop_back();
    CreateDirectoryW((L"\\\\?\\" + wdir).c_str(), nullptr);
    for (int i = 0; i < 5; i++) {
        dir += "\\" + std::string(60, 'a' + i);
        wdir += L"\\" + std::wstring(60, L'a' + i);
        CreateDirectoryW((L"\\\\?\\" + wdir).c_str(), nullptr);
    }
    const std::string path = dir + "\\layer.tar";
    std::printf("length %zu\n", path.size());
    {
        FileSink out(path, FileMode::CreateNew, 4096);
        TarWriter w(out);
        TarHeader h;
        h.name = "Files/x";
        h.size = 100000;
        w.add(h);
        std::string data(100000, 'z');
        w.write(reinterpret_cast<const std::uint8_t*>(data.data()), 70000);
        w.write(reinterpret_cast<const std::uint8_t*>(data.data()), 30000);
        w.finish();
        out.close();
    }
    {
        FileSource in(path, 1000);
        TarReader r(in);
        TarHeader h;
        while (r.next(h))
            std::printf("entry %s %llu\n", h.name.c_str(), (unsigned long long)h.size);
        std::printf("%s\n", r.diff_id().c_str());
    }
    try {
        FileSink again(path, FileMode::CreateNew);
    } catch (const Error& e) {
        std::printf("exists %u %d\n", e.code, e.path == path);
    }
    try {
        FileSource missing(dir + "\\missing");
    } catch (const Error& e) {
        std::printf("missing %u\n", e.code);
    }
    return 0;
}
"""


@pytest.mark.wine
def test_file_io_win32_long_unicode_paths(tmp_path: Path) -> None:
    require_tools(
        [name for name, tool in (("mingw-w64", MINGW), ("wine64", WINE)) if tool is None],
        "apt-get install g++-mingw-w64-x86-64-posix wine64",
    )
    src = tmp_path / "file_io_test.cpp"
    src.write_text(PROGRAM)
    exe = tmp_path / "file_io_test.exe"
    core = [
        str(REPO / "native" / "core" / f)
        for f in (
            "file_io.cpp",
            "tar.cpp",
            "tar_split.cpp",
            "sha256.cpp",
            "sha256_worker.cpp",
            "error.cpp",
            "encoding.cpp",
        )
    ]
    subprocess.run(
        [
            MINGW,
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-DUNICODE",
            "-D_UNICODE",
            "-DWIN32_LEAN_AND_MEAN",
            "-DNOMINMAX",
            f"-I{REPO / 'native'}",
            str(src),
            *core,
            "-static",
            "-o",
            str(exe),
        ],
        check=True,
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "WINEDEBUG": "-all", "WINEPREFIX": str(tmp_path / "prefix")}
    proc = subprocess.run(
        [WINE, str(exe), "Z:" + str(work).replace("/", "\\")],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert int(lines[0].split()[1]) > 300
    payload_tar = _expected_tar()
    assert lines[1:] == [
        "entry Files/x 100000",
        "sha256:" + hashlib.sha256(payload_tar).hexdigest(),
        "exists 80 1",  # ERROR_FILE_EXISTS, with the path
        "missing 2",  # ERROR_FILE_NOT_FOUND
    ]
    written = next(work.rglob("layer.tar"))
    assert written.read_bytes() == payload_tar
    assert "tést-数" in str(written)


def _expected_tar() -> bytes:
    from winlayer import _hcs

    w = _hcs.TarWriter()
    w.add("Files/x", size=100000, mode=0)
    w.write(b"z" * 100000)
    out = w.finish()
    assert out is not None
    return out
