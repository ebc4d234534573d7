"""`.ci/run` on a fresh machine: it installs the Debian packages the suite needs from its own
list, and any failing step fails the run. The script runs in a temporary tree whose PATH
holds stub `python3`, `dpkg-query` and `apt-get`, and whose ci/ scripts only record that
they ran."""

from __future__ import annotations

import os
import platform
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .capabilities import require
from .conftest import REPO, require_tools

CI_RUN = REPO / ".ci" / "run"

# Each stub appends "NAME ARGS" to $STUB_LOG; $STUB_FAIL names the step that fails.
STUBS = {
    "bin/python3": """
[ "$STUB_FAIL" = venv ] && exit 1
mkdir -p .venv/bin && cp "$STUB_VENV"/pip "$STUB_VENV"/python .venv/bin/""",
    "venv/pip": '[ "$STUB_FAIL" != pip ]',
    "venv/python": '[ "$STUB_FAIL" != pytest ] || exit "$STUB_PYTEST_EXIT"',
    # `dpkg-query -W -f=... PACKAGE`: a package in $STUB_MISSING is not installed.
    "bin/dpkg-query": """
for package; do :; done
case " $STUB_MISSING " in *" $package "*) echo not-installed ;; *) echo installed ;; esac""",
    "bin/apt-get": '[ "$STUB_FAIL" != apt-get ]',
    "tree/ci/sanitize.sh": "",
}


def _write_stubs(root: Path) -> None:
    for relative, body in STUBS.items():  # logged by its path under bin/, venv/ or tree/
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        name = path.relative_to(root / relative.split("/")[0])
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "$STUB_LOG"\n{body}\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_ci(
    tmp_path: Path, fail: str = "", pytest_exit: int = 1, missing: str = ""
) -> tuple[int, list[str]]:
    """Runs a copy of .ci/run against the stubs; returns its exit code and the stubs' log.
    The stubs are #!/bin/sh scripts: this runs where the OS runs scripts by their #! line."""
    require("shebang")
    _write_stubs(tmp_path)
    (tmp_path / "tree" / ".ci").mkdir()
    shutil.copy(CI_RUN, tmp_path / "tree" / ".ci" / "run")
    log = tmp_path / "log"
    log.touch()
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "STUB_VENV": str(tmp_path / "venv"),
        "STUB_FAIL": fail,
        "STUB_PYTEST_EXIT": str(pytest_exit),
        "STUB_MISSING": missing,
    }
    proc = subprocess.run(
        ["bash", str(tmp_path / "tree" / ".ci" / "run")],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, log.read_text().splitlines()


def _steps(log: list[str]) -> list[str]:
    return [line.split()[0] for line in log if not line.startswith("dpkg-query")]


def test_ci_runs_every_step_in_order_when_all_pass(tmp_path: Path) -> None:
    code, log = run_ci(tmp_path)
    assert code == 0, log
    assert _steps(log) == ["python3", "pip", "python", "ci/sanitize.sh"]


@pytest.mark.parametrize(
    ("fail", "pytest_exit", "failed_step"),
    [
        ("apt-get", 1, "apt-get"),
        ("venv", 1, "python3"),
        ("pip", 1, "pip"),
        ("pytest", 1, "python"),
        ("pytest", 5, "python"),  # pytest collected no test
    ],
    ids=["apt-get", "venv", "pip", "pytest-failed", "pytest-ran-no-test"],
)
def test_a_failing_step_fails_the_run_and_stops_it(
    tmp_path: Path, fail: str, pytest_exit: int, failed_step: str
) -> None:
    code, log = run_ci(tmp_path, fail=fail, pytest_exit=pytest_exit, missing="wine64")
    assert code != 0
    assert _steps(log)[-1] == failed_step, log
    assert "ci/sanitize.sh" not in _steps(log)


def test_ci_installs_only_the_missing_debian_packages(tmp_path: Path) -> None:
    code, log = run_ci(tmp_path, missing="libclang-rt-dev wine64")
    assert code == 0, log
    apt = [line for line in log if line.startswith("apt-get")]
    assert apt == [
        "apt-get update",
        "apt-get install -y --no-install-recommends wine64 libclang-rt-dev",
    ]
    queried = {line.split()[-1] for line in log if line.startswith("dpkg-query")}
    assert queried == set(debian_packages())


def test_ci_installs_nothing_when_nothing_is_missing(tmp_path: Path) -> None:
    code, log = run_ci(tmp_path)
    assert code == 0, log
    assert not [line for line in log if line.startswith("apt-get")]


def debian_packages() -> list[str]:
    """The `debian_packages=( ... )` list of .ci/run, comments dropped."""
    match = re.search(r"^debian_packages=\((.*?)^\)", CI_RUN.read_text(), re.M | re.S)
    assert match, ".ci/run must keep its Debian packages in debian_packages=( ... )"
    return [w for line in match[1].splitlines() for w in line.split("#")[0].split()]


# What the suite and ci/ run from Debian packages: commands, and files the compilers link.
COMMANDS = {
    "the module's build, ci/sanitize.sh": ["g++", "gcc", "cmake"],
    "ci/wine/run.sh": ["x86_64-w64-mingw32-g++-posix", "x86_64-w64-mingw32-dlltool"],
    "ci/fuzz_tar.sh": ["clang++"],
    "tests/test_portable_backend.py, tests/conftest.py": ["bash", "unshare", "mount", "umount"],
    "tests/daemons.py, tests/realtools.py": ["containerd", "ctr", "skopeo", "docker-registry"],
    "tests/test_workflows.py": ["shellcheck"],
}
COMPILER_FILES = {
    "clang++": [f"libclang_rt.{lib}-{platform.machine()}.a" for lib in ("fuzzer", "asan")],
    "gcc": ["libasan.so", "libubsan.so"],  # ci/sanitize.sh preloads them
}


def _debian_tool_files() -> dict[str, str | None]:
    """Each command or runtime file by name: its path, None where missing. Debian's own
    commands, not a pip or pyenv one earlier in PATH."""

    def which(name: str) -> str | None:
        return shutil.which(name, path="/usr/bin:/bin")

    files = {name: which(name) for names in COMMANDS.values() for name in names}
    files["wine64"] = which("wine64") or (  # Debian's wine64 puts it in /usr/lib/wine
        "/usr/lib/wine/wine64" if os.access("/usr/lib/wine/wine64", os.X_OK) else None
    )
    for compiler, names in COMPILER_FILES.items():
        for name in names:
            found = (
                ""
                if files[compiler] is None
                else subprocess.run(
                    [compiler, f"-print-file-name={name}"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip()
            )
            files[name] = found if os.path.isabs(found) and os.path.exists(found) else None
    return files


def _owning_package(path: str) -> str | None:
    real = os.path.realpath(path)
    # With merged /usr, dpkg may know a file by its /bin or /lib path.
    for candidate in dict.fromkeys(
        [path, real, path.removeprefix("/usr"), real.removeprefix("/usr")]
    ):
        found = subprocess.run(
            ["dpkg-query", "-S", candidate], capture_output=True, text=True, check=False
        )
        if found.returncode == 0:
            return found.stdout.split(":")[0]  # "package[:arch]: path"
    return None


def _installed_packages() -> dict[str, tuple[str, set[str]]]:
    """Each installed package: its priority and what it depends on (every alternative)."""
    fields = "${db:Status-Status}\t${Package}\t${Priority}\t${Pre-Depends}, ${Depends}\n"
    listing = subprocess.run(
        ["dpkg-query", "-W", f"-f={fields}"], capture_output=True, text=True, check=True
    ).stdout
    packages = {}
    for line in listing.splitlines():
        status, name, priority, depends = line.split("\t")
        if status == "installed":
            packages[name] = (
                priority,
                set(re.findall(r"(?:^|[,|])\s*([a-z0-9][a-z0-9+.-]*)", depends)),
            )
    return packages


def test_the_debian_package_list_brings_every_tool_the_suite_runs() -> None:
    require_tools(["dpkg-query"] if shutil.which("dpkg-query") is None else [], "a Debian system")
    files = _debian_tool_files()
    require_tools([name for name, path in files.items() if path is None], "bash .ci/run")
    installed = _installed_packages()
    listed = debian_packages()
    brought: set[str] = set()
    todo = [p for p in listed if p in installed]
    while todo:
        package = todo.pop()
        if package not in brought:
            brought.add(package)
            todo.extend(d for d in installed[package][1] if d in installed)
    not_brought = {}
    for name, path in files.items():
        assert path is not None
        owner = _owning_package(path)
        # Packages of priority "required" are on every Debian system.
        if owner not in brought and installed.get(owner or "", ("",))[0] != "required":
            not_brought[name] = f"{path} ({owner})"
    assert not not_brought, (
        f"not brought by .ci/run's debian_packages: {not_brought}; "
        f"listed but not installed here: {[p for p in listed if p not in installed]}"
    )
