"""Where hubbub's time goes during one scenario: py-spy attached to the server process.

    python -m bench profile saturated          # also: connect, idle, paced, storm, maxconn

Runs the scenario's group against hubbub as ``python -m bench run`` would, attaches
``py-spy record`` (``pip install py-spy``; sampling, non-blocking, on-CPU samples only)
to the server for exactly the measured phase, and prints the functions that were on
the CPU: by self time (the frame at the top of the stack) and inclusive (anywhere in
the stack). The collapsed stacks are kept for flame graphs (``--out``).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from . import scenarios
from .harness import ServerProcess, cores
from .scenarios import Scale, run

__all__ = ["profile", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` → ``func (file.py)``: lines merged, paths shortened."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib/" + path.split("/", 1)[1]
            break
    else:
        path = re.sub(r"^.*/(actors|hubbub|bench)/", r"\1/", path)
    return f"{m.group('func')} ({path})"


def summarize(collapsed: str, top: int = 25) -> str:
    """Self and inclusive tables from py-spy's raw (collapsed stack) output."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += n
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "(no samples: was the server on the CPU at all?)"
    out = [f"{total} on-CPU samples", "", "self time (top of stack):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_t.most_common(top)]
    out += ["", "inclusive (anywhere in the stack):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def profile(
    names: tuple[str, ...],
    scale: Scale,
    out: str,
    top: int,
    log: Callable[[str], None],
    rate: int = 250,
) -> int:
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    wanted = names[0]
    path = Path(out) if out else Path(tempfile.gettempdir()) / f"bench-profile-{wanted}.txt"
    spy: dict[str, subprocess.Popen[bytes]] = {}

    def phase(server: ServerProcess, scenario: str, event: str) -> None:
        if scenario != wanted:
            return
        if event == "begin":
            log(f"py-spy attached to hubbub (pid {server.pid}) for {scenario}")
            spy["p"] = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(server.pid),
                    "--rate",
                    str(rate),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        elif "p" in spy:
            proc = spy.pop("p")
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode not in (0, -2, 130) and not path.exists():
                log(f"py-spy failed: {err.decode(errors='replace')[-500:]}")

    scenarios.PHASE = phase
    try:
        results = run("hubbub", scale, names, cores=cores(), log=log)
    finally:
        scenarios.PHASE = scenarios.no_phase
    from .report import describe_run

    print(describe_run(results))
    print()
    if not path.exists():
        print(f"no profile written ({path})", file=sys.stderr)
        return 1
    print(f"profile of hubbub during {wanted!r} ({path}):")
    print(summarize(path.read_text(), top))
    return 0


def memprofile(users: int, scale: Scale, top: int, log: Callable[[str], None]) -> int:
    """hubbub under tracemalloc (bench/memtrace.py) while ``users`` log in like *connect*:
    the allocation sites that grew, per user, next to the RSS growth per user."""
    import os
    import time
    import tracemalloc
    from dataclasses import replace

    from .harness import Fleet

    base = Path(tempfile.mkdtemp(prefix="bench-mem-")) / "snap"
    snaps: list[Path] = []
    rss: list[int] = []

    def snapshot(server: ServerProcess) -> None:
        n = len(snaps) + 1
        rss.append(server.rss_kb())
        os.kill(server.pid, signal.SIGUSR1)
        done = Path(f"{base}.{n}.done")
        deadline = time.monotonic() + 120
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        snaps.append(Path(f"{base}.{n}"))

    def phase(server: ServerProcess, scenario: str, event: str) -> None:
        if scenario == "connect":
            if event == "end":
                time.sleep(1.0)
            snapshot(server)

    scale = replace(scale, connect_users=users)
    scenarios.PHASE = phase
    scenarios.SERVER_ENV = {"BENCH_SNAPSHOT": str(base)}
    try:
        with Fleet(scale.workers, cores()[1]) as fleet:
            figures = scenarios.group_connect(
                "hubbub-memtrace", scale, fleet, cores()[0], {"connect"}
            )
    finally:
        scenarios.PHASE = scenarios.no_phase
        scenarios.SERVER_ENV = {}
    try:
        if len(snaps) < 2 or not all(s.exists() for s in snaps[:2]):
            print("no snapshots written", file=sys.stderr)
            return 1
        before, after = (tracemalloc.Snapshot.load(str(s)) for s in snaps[:2])
    finally:
        shutil.rmtree(base.parent, ignore_errors=True)  # snapshots are large
    ok = figures["connect"]["users"]
    stats = after.compare_to(before, "lineno")
    traced = sum(s.size_diff for s in stats)
    print(
        f"{ok} users logged in; RSS grew {(rss[1] - rss[0]) / max(1, ok):.1f} KB per user "
        f"(under tracemalloc), traced Python allocations {traced / 1024 / max(1, ok):.1f} KB per user"
    )
    print("\nallocation sites by growth (per user):")
    for s in stats[:top]:
        frame = s.traceback[0]
        print(
            f"  {s.size_diff / max(1, ok):8.0f} B  {s.count_diff / max(1, ok):6.1f} blocks  "
            f"{_short(f'x ({frame.filename}:{frame.lineno})')[3:-1]}:{frame.lineno}"
        )
    by_file = after.compare_to(before, "filename")
    print("\nby file (per user):")
    for s in by_file[:12]:
        print(
            f"  {s.size_diff / max(1, ok):8.0f} B  {_short(f'x ({s.traceback[0].filename})')[3:-1]}"
        )
    return 0
