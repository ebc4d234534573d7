"""Threads and processes sharing one home: counts and folders stay consistent."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from winlayer import Driver, LayerExists, LayerInUse, LayerNotFound

from .layerbuild import base_layer, d, f, layer_tar

LEAVES = [f"leaf{i}" for i in range(4)]
EXPECTED = (LayerInUse, LayerNotFound, LayerExists)

# A child process runs the same churn as the threads, on the same home.
WORKER = r"""
import sys
sys.path.insert(0, {repo!r})
from winlayer import Driver
from tests.test_driver_stress import churn
print(churn(Driver({home!r}, backend={backend!r}, base_images={base!r}), {seed}, {seconds}))
"""


def churn(driver: Driver, seed: int, seconds: float) -> int:
    """Random get/put, diff, remove and re-import of overlapping layers for `seconds`;
    returns how many operations ran (refusals the contract allows count too)."""
    rng = random.Random(seed)
    ops = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        leaf = rng.choice(LEAVES)
        try:
            op = rng.randrange(4)
            if op == 0:
                with driver.mounted(rng.choice(["base", leaf])) as root:
                    assert root.exists()
            elif op == 1:
                with driver.diff(leaf) as stream:
                    stream.read()
            elif op == 2:
                driver.remove(leaf)
            else:
                driver.apply_diff(leaf, "base", io.BytesIO(_leaf_tar(leaf)))
        except EXPECTED:
            pass
        ops += 1
    return ops


def _leaf_tar(leaf: str) -> bytes:
    return layer_tar([d("Files"), f(f"Files/{leaf}", leaf.encode())])


def test_threads_and_processes_share_a_home(tmp_path: Path, backend_name: str) -> None:
    home, base = tmp_path / "home", tmp_path / "base"
    driver = Driver(home, backend=backend_name, base_images=base)
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    for leaf in LEAVES:
        driver.apply_diff(leaf, "base", io.BytesIO(_leaf_tar(leaf)))
    seconds = 4.0
    repo = str(Path(__file__).parent.parent)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER.format(
                    repo=repo,
                    home=str(home),
                    backend=backend_name,
                    base=str(base),
                    seed=seed,
                    seconds=seconds,
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    failures: list[BaseException] = []
    counts: list[int] = []

    def worker(seed: int) -> None:
        try:
            counts.append(churn(driver, seed, seconds))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(10, 18)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        counts.append(int(out))
    assert failures == []
    assert sum(counts) > 50  # the run did real work

    # Afterwards: no mount counts, no leftovers, every layer still verifies.
    assert driver.cleanup() == []
    layers = {layer.id for layer in driver.layers()}
    assert "base" in layers
    visible = {p for p in os.listdir(home) if not p.startswith(".")}
    assert visible == layers
    for layer_id in layers:
        assert driver.mount_count(layer_id) == 0
        assert driver.verify(layer_id).startswith("sha256:")
    assert not list((home / ".winlayer" / "mounts").glob("*.json"))
