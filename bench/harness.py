"""The two sides of a measurement: a server process pinned to one core, and the fleet of
load generator workers pinned to the other.

``ServerProcess`` starts hubbub (``server.py``) or the peer (``bench.peer``) exactly as
a user would, reads its "... listening on http://HOST:PORT" line, and reads its resident
memory, CPU time and open files from ``/proc``. ``Fleet`` forks the workers of
``bench.loadgen`` and sends them commands.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import loadgen

__all__ = ["ROOT", "ServerProcess", "Fleet", "cores", "BenchError"]

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The harness could not do what a scenario needed (a server did not start, a worker
    did not answer): the run is void, which is not the same as a bad figure."""


def cores() -> tuple[int | None, int | None]:
    """(server core, load core): 0 and 1 when this process may use both, else no pinning."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


class ServerProcess:
    """One server under test. ``kind`` is "hubbub" or "peer"; ``flags`` its options."""

    def __init__(
        self,
        kind: str,
        flags: list[str],
        core: int | None = None,
        nofile: int | None = None,
        start_timeout: float = 20.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        if kind == "hubbub":
            argv = [sys.executable, "server.py", "--port", "0", *flags]
        elif kind == "hubbub-memtrace":  # hubbub under tracemalloc (bench/memtrace.py)
            argv = [sys.executable, "-m", "bench.memtrace", "--port", "0", *flags]
        elif kind == "peer":
            argv = [sys.executable, "-m", "bench.peer", "--port", "0", *flags]
        else:
            raise ValueError(f"unknown server kind {kind!r}")
        if core is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(core), *argv]  # exec: the pid stays the server's
        self.argv = argv
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra_env or {})

        def limits() -> None:
            # Raise the open-file limit soft → hard, or lower both to what was asked for
            # (the smoke test's "max connections"): hubbub raises its soft limit to the
            # hard one itself, so a lower soft limit alone would not hold.
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            n = min(nofile or hard, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n if nofile else hard))

        # stderr to a file: nobody reads a pipe during a run, and hubbub logs a line
        # per connect and disconnect.
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"bench-{kind}-", suffix=".log")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, preexec_fn=limits
        )
        self.pid = self.proc.pid
        line = self._first_line(start_timeout)
        match = re.search(rb"listening on https?://([^:\s]+):(\d+)", line)
        if not match:
            self.stop()
            raise BenchError(f"{kind} did not start: {line!r} {self.log_text()[-2000:]}")
        self.host, self.port = match.group(1).decode(), int(match.group(2))

    def _first_line(self, timeout: float) -> bytes:
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf and time.monotonic() < deadline:
            ready, _, _ = select.select([out], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(out.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
        return buf

    # --- /proc ------------------------------------------------------------------------

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]  # the kernel always writes this line

    def cpu_seconds(self) -> float:
        """User + system time of the whole process (every thread), in seconds."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def nofile(self) -> int:
        """The server's soft open-file limit."""
        limits = Path(f"/proc/{self.pid}/limits").read_text()
        return int(re.search(r"^Max open files\s+(\d+)", limits, re.M).group(1))  # type: ignore[union-attr]  # the kernel always writes this line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self.log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Fleet:
    """``n`` load generator workers (forked, each pinned to ``core``)."""

    def __init__(self, n: int, core: int | None = None) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        for i in range(n):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=loadgen.main, args=(theirs, i, core), daemon=True, name=f"bench-loadgen-{i}"
            )
            proc.start()
            theirs.close()
            self.pipes.append(mine)
            self.procs.append(proc)
        self.cpu = [0.0] * n  # each worker's CPU seconds at its last answer

    def __len__(self) -> int:
        return len(self.pipes)

    def each(self, cmds: list[dict[str, Any]], grace: float = 15.0) -> list[dict[str, Any]]:
        """Send cmds[i] to worker i, wait for every answer (each command's timeout plus
        ``grace``), and return them in worker order."""
        for pipe, cmd in zip(self.pipes, cmds, strict=True):
            pipe.send(cmd)
        deadline = time.monotonic() + max(c.get("timeout", 30.0) for c in cmds) + grace
        answers: dict[int, dict[str, Any]] = {}
        waiting = {id(p): i for i, p in enumerate(self.pipes)}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"load generator workers {sorted(waiting.values())} did not "
                    f"answer {cmds[0]['cmd']!r} in time"
                )
            for pipe in multiprocessing.connection.wait(
                [self.pipes[i] for i in waiting.values()], left
            ):
                i = waiting.pop(id(pipe))
                try:
                    answers[i] = pipe.recv()
                except EOFError:
                    raise BenchError(f"load generator worker {i} died") from None
                self.cpu[i] = answers[i]["cpu"]
        return [answers[i] for i in range(len(self.pipes))]

    def all(self, cmd: dict[str, Any], grace: float = 15.0) -> list[dict[str, Any]]:
        return self.each([cmd] * len(self.pipes), grace)

    def cpu_seconds(self) -> float:
        """CPU seconds of all workers so far (as of their latest answers)."""
        return sum(a["cpu"] for a in self.all({"cmd": "cpu", "timeout": 5.0}))

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send({"cmd": "quit"})
            except OSError:
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
