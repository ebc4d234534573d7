"""What the sdist and the wheel carry: the license, and none of the build tree."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import REPO

LICENSE = REPO / "LICENSE"


def test_license_is_the_apache_2_0_text() -> None:
    text = LICENSE.read_text()
    assert text.lstrip().startswith(
        "Apache License\n                           Version 2.0, January 2004"
    )
    assert "END OF TERMS AND CONDITIONS" in text
    assert re.search(r"^   Copyright \d{4} the winlayer authors$", text, re.M)


def test_installed_wheel_carries_the_license() -> None:
    dist = importlib.metadata.distribution("winlayer")
    assert dist.metadata["License-Expression"] == "Apache-2.0"
    assert dist.metadata.get_all("License-File") == ["LICENSE"]
    licenses = [f for f in dist.files or [] if f.match("*.dist-info/licenses/LICENSE")]
    assert len(licenses) == 1, dist.files
    assert licenses[0].read_text() == LICENSE.read_text()


def _source_copy(dest: Path) -> Path:
    """The source tree without what a build or a checkout adds."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "__pycache__", ".*_cache", ".hypothesis", "*.so"
    )
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


@pytest.mark.skipif(sys.platform == "win32", reason="makes symlinks")
def test_sdist_skips_the_build_tree_and_its_links_out(tmp_path: Path) -> None:
    pytest.importorskip("scikit_build_core.build")
    src = _source_copy(tmp_path / "src")
    # What a Wine run may leave in build/: a prefix whose Z: drive is the whole filesystem,
    # and a link back into the tree.
    (src / "build" / "wine" / "prefix" / "dosdevices").mkdir(parents=True)
    os.symlink("/", src / "build" / "wine" / "prefix" / "dosdevices" / "z:")
    os.symlink("../..", src / "build" / "wine" / "loop")
    out = tmp_path / "dist"
    out.mkdir()
    try:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, scikit_build_core.build as b; b.build_sdist(sys.argv[1])",
                str(out),
            ],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the sdist build walked into build/ and did not finish in 120 s")
    (sdist,) = out.glob("winlayer-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        pkg_info = tar.extractfile(tar.getmember(f"{sdist.name[: -len('.tar.gz')]}/PKG-INFO"))
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    assert not [n for n in names if n.startswith("build/")]
    assert {"LICENSE", "pyproject.toml", "CMakeLists.txt", "native/bridge/pystream.cpp"} <= names
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
