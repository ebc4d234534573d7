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

WORKER = r"""
import io, random, sys, time
sys.path.insert(0, {tests!r})
from winlayer import Driver, LayerExists, LayerInUse, LayerNotFound
from layerbuild import d, f, layer_tar
driver = Driver({home!r}, backend={backend!r}, base_images={base!r})
rng = random.Random({seed})
deadline = time.monotonic() + {seconds}
ops = 0
while time.monotonic() < deadline:
    leaf = rng.choice({leaves!r})
    try:
        op = rng.randrange(4)
        if op == 0:
            with driver.mounted(rng.choice(["base", leaf])) as root:
                assert root.exists()
        elif op == 1:
            with driver.diff(leaf) as s:
                s.read()
        elif op == 2:
            driver.remove(leaf)
        else:
            tar = layer_tar([d("Files"), f("Files/" + leaf, leaf.encode())])
            driver.apply_diff(leaf, "base", io.BytesIO(tar))
        ops += 1
    except (LayerInUse, LayerNotFound, LayerExists):
        ops += 1
print(ops)
"""


def _leaf_tar(leaf: str) -> bytes:
    return layer_tar([d("Files"), f(f"Files/{leaf}", leaf.encode())])


def test_threads_and_processes_share_a_home(tmp_path: Path, backend_name: str) -> None:
    home, base = tmp_path / "home", tmp_path / "base"
    driver = Driver(home, backend=backend_name, base_images=base)
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    for leaf in LEAVES:
        driver.apply_diff(leaf, "base", io.BytesIO(_leaf_tar(leaf)))
    seconds = 4.0
    tests_dir = str(Path(__file__).parent)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER.format(
                    tests=tests_dir,
                    home=str(home),
                    backend=backend_name,
                    base=str(base),
                    seed=seed,
                    seconds=seconds,
                    leaves=LEAVES,
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
        rng = random.Random(seed)
        ops = 0
        deadline = time.monotonic() + seconds
        try:
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
        except BaseException as exc:
            failures.append(exc)
        counts.append(ops)

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
