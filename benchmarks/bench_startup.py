"""Benchmark: start-up of the ``winlayer`` command.

Issue 18's targets: ``winlayer --version``, ``winlayer --help`` and ``winlayer ls`` on an
empty store each in at most 0.1 s, and ``winlayer --version`` at most 4x ``python3 -c
pass``. Every command runs as its own process, the contenders alternating (so that noise
from other work on the machine hits them alike); the median of ``--runs`` runs of each is
printed with its ratio to ``python -c pass`` of the same interpreter (the baseline pays
the same interpreter start-up and site hooks, e.g. an editable install's) and of the
interpreter a virtual environment was made from. The commands run from .pyc files, as an
installed package does (``benchmarks/installed.py``).

    python benchmarks/bench_startup.py             # 20 runs each
    python benchmarks/bench_startup.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.installed import cli_env


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = cli_env(WINLAYER_HOME=os.path.join(home, "store"))
        env.pop("WINLAYER_BACKEND", None)
        winlayer = [sys.executable, "-m", "winlayer"]
        contenders = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "winlayer --version": [*winlayer, "--version"],
            "winlayer --help": [*winlayer, "--help"],
            "winlayer ls (empty store)": [*winlayer, "ls"],
        }
        # The interpreter the venv was made from (not a shim such as pyenv's: a shell
        # script that costs more than the interpreter itself).
        base_python = getattr(sys, "_base_executable", sys.executable)
        if os.path.realpath(base_python) != os.path.realpath(sys.executable):
            contenders["python3 -c pass (base)"] = [base_python, "-c", "pass"]
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for argv in contenders.values():  # warm the page cache
            _time(argv, env)
        for _ in range(args.runs):
            for name, argv in contenders.items():
                times[name].append(_time(argv, env))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["python -c pass"]
    system = medians.get("python3 -c pass (base)")
    print(f"median of {args.runs} alternating runs each")
    print(f"{'command':<28} {'median s':>9} {'x python -c pass':>17} {'x base python3':>17}")
    for name, median in medians.items():
        vs_system = f"{median / system:17.2f}" if system else f"{'-':>17}"
        print(f"{name:<28} {median:9.3f} {median / base:17.2f} {vs_system}")
    print("targets: --version, --help, ls at most 0.100 s; --version at most 4x python -c pass")


if __name__ == "__main__":
    main()
