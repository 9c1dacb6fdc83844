"""A real, throwaway ``redis-server`` for the cluster tests and bench/cluster_fanout.py.

Started on a free port with no persistence (``--save '' --appendonly no``), never the
machine's own Redis on 6379.  A missing ``redis-server`` is a failure with a clear
message, never a skip: CI installs it (.ci/run), and a cluster that is never tested
would rot quietly.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process; ``stop()`` / ``start()`` again on the same port (a restart)."""

    def __init__(self, port: int | None = None, unix: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed: the cluster tests need a real Redis "
                        "(apt-get install redis-server; .ci/run installs it)", pytrace=False)
        self.port = port or free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="hubbub-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket = str(Path(self.dir.name, "redis.sock")) if unix else None
        """Also listen on this unix socket (``unix_url``)."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        log = Path(self.dir.name, "redis.log")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir.name, "--logfile", str(log),
             *(["--unixsocket", self.socket] if self.socket else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text() if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}: {text[-500:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # no persistence: nothing to flush, and a kill is a real outage
            self.proc.wait()
        self.proc = None

    def command(self, *args: str) -> bytes:
        """One command through a plain socket (inline protocol): the raw reply line(s)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall((" ".join(args) + "\r\n").encode())
            time.sleep(0.05)
            return s.recv(65536)

    def close(self) -> None:
        self.stop()
        self.dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
