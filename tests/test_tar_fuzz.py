"""The fuzz target's property on its regression corpus, and libFuzzer runs of each target
(the tar reader, the Windows layer semantics) bounded to 15 seconds of fuzzing (needs
clang; .ci/run installs it)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from winlayer import _hcs
from winlayer.errors import InvalidLayer

from .capabilities import needs
from .conftest import require_tools

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "native" / "fuzz" / "corpus"


@pytest.mark.parametrize("path", sorted(CORPUS.iterdir()), ids=lambda p: p.name)
def test_corpus_input_reads_or_fails_cleanly(path: Path) -> None:
    raw = path.read_bytes()
    try:
        scan = _hcs.read_tar(io.BytesIO(raw), payloads=True, tar_split=True)
    except InvalidLayer as e:
        error: InvalidLayer | None = e
    else:
        error = None
    if error is not None:
        assert 0 <= error.offset <= len(raw)
        return
    assert scan.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert scan.tar_split is not None
    payloads = iter([e.data for e in scan.entries if e.data])
    with _hcs.tar_split_rebuild(scan.tar_split, lambda name, size: next(payloads)) as s:  # type: ignore[arg-type,return-value]
        assert s.read() == raw


@needs("shebang")  # runs ci/fuzz_tar.sh itself
@pytest.mark.parametrize("target", ["tar", "layer_tar"])
def test_fuzz_for_15_seconds(tmp_path: Path, target: str) -> None:
    require_tools(
        ["clang++"] if shutil.which("clang++") is None else [],
        "apt-get install clang libclang-rt-dev",
    )
    env = {**os.environ, "FUZZ_BUILD_DIR": str(tmp_path)}
    proc = subprocess.run(
        [str(REPO / "ci" / "fuzz_tar.sh"), "15", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any((tmp_path / "artifacts").iterdir())
