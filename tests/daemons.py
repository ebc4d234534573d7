"""The daemons image users compare winlayer with, started on private folders: containerd
(with ``ctr``) on its own socket, the CNCF distribution registry (Debian's
``docker-registry``) on a free port of 127.0.0.1. Plain Python (no pytest): the tests
(tests/realtools.py) and the benchmarks start them the same way.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

START_TIMEOUT_S = 30.0
TOOL_TIMEOUT_S = 600.0


def tool_env() -> dict[str, str]:
    """The environment for a real tool: without ci/sanitize.sh's preloaded sanitizer
    runtimes, which are for the native module, not for Go programs."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def run_tool(*argv: str | os.PathLike[str], cwd: Path | None = None) -> str:
    """Run a real tool; its stdout, or an AssertionError with its stderr."""
    done = subprocess.run(
        [os.fspath(a) for a in argv],
        capture_output=True,
        text=True,
        env=tool_env(),
        cwd=cwd,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stderr}{done.stdout}"
        )
    return done.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start(argv: list[str], log: Path, ready: Callable[[], bool]) -> subprocess.Popen[bytes]:
    """Start a daemon logging to `log`; wait until `ready` says it answers (its log in the
    error if it exits or never does)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=tool_env())
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"{argv[0]} exited {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            _stop(process)
            raise AssertionError(
                f"{argv[0]} did not start in {START_TIMEOUT_S} s:\n{log.read_text()}"
            )
        time.sleep(0.05)
    return process


class Daemon:
    """A started daemon: :meth:`stop` it, or use it as a context manager."""

    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        _stop(self.process)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- containerd ---------------------------------------------------------------------------


class Containerd(Daemon):
    """A containerd daemon on a private root, state and socket; :meth:`ctr` runs ``ctr``
    against it in the namespace ``winlayer-test``."""

    NAMESPACE = "winlayer-test"
    # Plugins that need what a test machine may lack (a CRI setup, special filesystems).
    DISABLED: ClassVar[list[str]] = [
        "io.containerd.grpc.v1.cri",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.internal.v1.tracing",
        "io.containerd.tracing.processor.v1.otlp",
    ]

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.socket = folder / "containerd.sock"
        config = folder / "config.toml"
        disabled = ", ".join(json.dumps(p) for p in self.DISABLED)
        config.write_text(
            "version = 2\n"
            f'root = "{folder / "root"}"\n'
            f'state = "{folder / "state"}"\n'
            f"disabled_plugins = [{disabled}]\n"
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{folder / "opt"}"\n'
        )
        self.log = folder / "containerd.log"
        self.process = _start(["containerd", "--config", str(config)], self.log, self._answers)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        done = subprocess.run(
            ["ctr", "--address", str(self.socket), "version"],
            capture_output=True,
            env=tool_env(),
            check=False,
        )
        return done.returncode == 0

    def ctr(self, *args: str | os.PathLike[str]) -> str:
        """``ctr --address SOCKET --namespace winlayer-test ARGS``; its stdout."""
        return run_tool("ctr", "--address", self.socket, "--namespace", self.NAMESPACE, *args)


# -- registry -----------------------------------------------------------------------------


class Registry(Daemon):
    """The CNCF distribution registry on 127.0.0.1:<free port>, storing in a private
    folder; :attr:`host` is ``127.0.0.1:<port>``, :attr:`url` its base URL. `tls` is a
    (certificate, key) pair of PEM files to serve HTTPS with; `auth` is the registry's
    ``auth`` configuration (``{"htpasswd": ...}`` or ``{"token": ...}``)."""

    def __init__(
        self,
        folder: Path,
        *,
        tls: tuple[Path, Path] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        port = free_port()
        self.host = f"127.0.0.1:{port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        http: dict[str, Any] = {"addr": self.host}
        if tls:
            http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(folder / "data")},
                "delete": {"enabled": True},
            },
            "http": http,
            # Foreign layers (Windows base images' kind) may name any http(s) URL.
            "validation": {"manifests": {"urls": {"allow": ["^https?://"]}}},
        }
        if auth:
            config["auth"] = auth
        path = folder / "config.yml"
        path.write_text(json.dumps(config, indent=2))  # YAML reads JSON
        self.log = folder / "registry.log"
        self.process = _start(["docker-registry", "serve", str(path)], self.log, self._listens)

    def _listens(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", int(self.host.rsplit(":", 1)[1]))) == 0
