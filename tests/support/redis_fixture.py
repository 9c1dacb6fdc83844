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

__all__ = ["RedisClusterServers", "RedisServer", "SentinelServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process; ``stop()`` / ``start()`` again on the same port (a restart)."""

    def __init__(self, port: int | None = None, unix: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail(
                "redis-server is not installed: the cluster tests need a real Redis "
                "(apt-get install redis-server; .ci/run installs it)",
                pytrace=False,
            )
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
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.name,
                "--logfile",
                str(log),
                *(["--unixsocket", self.socket] if self.socket else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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


def _wait_ping(
    port: int, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 5
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{what} did not start on port {port}: {text[-500:]}")
        time.sleep(0.02)


class SentinelServer:
    """A real Redis Sentinel (``redis-server --sentinel``) watching ``primary`` as ``mymaster``,
    with short timeouts so that a failover takes about two seconds."""

    service = "mymaster"

    def __init__(self, primary: RedisServer) -> None:
        self.primary = primary
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="hubbub-sentinel-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def start(self) -> SentinelServer:
        conf = Path(self.dir.name, "sentinel.conf")
        log = Path(self.dir.name, "sentinel.log")
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir.name}\nlogfile {log}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 3000\n"
        )
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, str(conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_ping(self.port, self.proc, log, "redis sentinel")
        return self

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()

    def __enter__(self) -> SentinelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisClusterServers:
    """A real 3-master Redis Cluster: three ``redis-server --cluster-enabled yes`` on free
    ports, joined with ``redis-cli --cluster create ... --cluster-yes``."""

    def __init__(self, masters: int = 3) -> None:
        self.ports = [free_port() for _ in range(masters)]
        self.dir = tempfile.TemporaryDirectory(prefix="hubbub-rcluster-")
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisClusterServers:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            pytest.fail(
                "redis-server and redis-cli are needed for the Redis Cluster test", pytrace=False
            )
        for port in self.ports:
            d = Path(self.dir.name, str(port))
            d.mkdir()
            log = d / "redis.log"
            proc = subprocess.Popen(
                # cluster-port: the bus is port + 10000 by default, too high for a free port.
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-config-file",
                    str(d / "nodes.conf"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(d),
                    "--logfile",
                    str(log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            _wait_ping(port, proc, log, "redis cluster node")
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=20,
        )
        deadline = time.monotonic() + 10
        while True:  # every node must agree the cluster is up before anyone uses it
            states = []
            for port in self.ports:
                out = subprocess.run(
                    [cli, "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                states.append("cluster_state:ok" in out)
            if all(states):
                return self
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.dir.cleanup()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
