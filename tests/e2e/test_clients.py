"""docs/clients.md: every example client runs against the real server (issue 7).

Each example goes through the same story: hello, profile, join, say; its own message
comes back to it; it shows what others say; and it answers pings, so a server that
pings every 0.3 s and drops a silent client after 1 s still has it in the room
seconds later.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gevent
import pytest

from ..support.browser_driver import chromium
from ..support.e2e import ROOT, Client, Server

pytestmark = pytest.mark.e2e

EXAMPLES = ROOT / "examples"
DOC = ROOT / "docs" / "clients.md"
PONG_TIMEOUT = 1.0
_n = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_n)}"


@pytest.fixture(scope="module")
def server():
    with Server("--ping-interval", "0.3", "--pong-timeout", str(PONG_TIMEOUT)) as srv:
        yield srv


def story(server: Server, nick: str, room: str, text: str, shows: Callable[[str], None]) -> None:
    """What every example must do; ``shows(line)`` waits until the example printed ``line``."""
    shows(f"[{room}] {nick}: {text}")  # its own message, echoed by the room
    tester = unique("tester")
    with Client(server) as other:
        other.login(tester, room)
        other.send({"type": "say", "room": room, "text": "welcome, example", "id": "w"})
        shows(f"[{room}] {tester}: welcome, example")  # what others say
    time.sleep(PONG_TIMEOUT * 2)  # pinged ~6 times meanwhile: silence would have cost it 4002
    users = {u["nick"]: u for u in server.users()}
    assert users.get(nick, {}).get("state") == "InChat", users.get(nick)
    assert users[nick]["rooms"] == [room]


class Process:
    """An example running as a child process; reads its stdout line by line."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []

    def shows(self, text: str, timeout: float = 10.0) -> None:
        """Wait for a line of output that contains ``text``."""
        try:
            with gevent.Timeout(timeout):
                while not any(text in line for line in self.lines):
                    line = self.proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE: never None
                    if not line:
                        break
                    self.lines.append(line.rstrip("\n"))
        except gevent.Timeout:
            pass
        if not any(text in line for line in self.lines):
            self.proc.kill()
            _out, err = self.proc.communicate()
            raise AssertionError(
                f"no {text!r} in the output:\n" + "\n".join(self.lines) + f"\n{err}"
            )

    def quit(self) -> tuple[int, str]:
        """End of input: the example says bye and exits."""
        out, err = self.proc.communicate(timeout=10)  # closes stdin
        self.lines += out.splitlines()
        return self.proc.returncode, err


def run_example(
    server: Server,
    argv: list[str],
    nick: str,
    room: str,
    text: str,
    env: dict[str, str] | None = None,
) -> None:
    proc = Process(argv, env)
    try:
        story(server, nick, room, text, proc.shows)
        code, err = proc.quit()
        assert code == 0, (code, proc.lines, err)
        assert proc.lines[-1] == "closed 1000", proc.lines
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.communicate()


def test_python_client(server):
    """examples/client.py (websockets): hello, profile, join, say, pings; Ctrl-D says bye."""
    nick, room = unique("py"), unique("pyroom")
    run_example(
        server,
        [
            sys.executable,
            str(EXAMPLES / "client.py"),
            server.ws_url,
            "--nick",
            nick,
            "--room",
            room,
            "--text",
            "hello from python",
        ],
        nick,
        room,
        "hello from python",
    )


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory) -> Path:
    """examples/package.json's ``ws``, installed once per test session into a temp dir."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("needs node and npm")
    where = tmp_path_factory.mktemp("node")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(EXAMPLES / name, where / name)
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return where / "node_modules"


def test_node_client(server, node_modules):
    """examples/client.js (ws): the same story, with the machine's node."""
    nick, room = unique("js"), unique("jsroom")
    env = dict(os.environ, NODE_PATH=str(node_modules))
    run_example(
        server,
        ["node", str(EXAMPLES / "client.js"), server.ws_url, nick, room, "hello from node"],
        nick,
        room,
        "hello from node",
        env=env,
    )


def test_browser_snippet(server):
    """examples/browser.html in Chromium, served from a loopback origin as the docs say."""
    expect = pytest.importorskip("playwright.sync_api", reason="pip install playwright").expect
    nick, room = unique("web"), unique("webroom")
    # What the docs say: `python -m http.server --bind 127.0.0.1 -d examples`. (A page the
    # test would make up with Playwright's route() has no address, and Chromium's
    # local network access checks then refuse its socket to 127.0.0.1.)
    files = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(EXAMPLES)))
    serving = threading.Thread(target=files.serve_forever, daemon=True)
    serving.start()
    origin = f"http://127.0.0.1:{files.server_address[1]}"
    with chromium() as browser:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(
                f"{origin}/browser.html?server={server.ws_url}&nick={nick}&room={room}"
                "&text=hello+from+the+browser"
            )
            log = page.locator("#log")
            story(
                server,
                nick,
                room,
                "hello from the browser",
                lambda line: expect(log).to_contain_text(line, timeout=10_000),
            )
            page.get_by_label("Message").fill("typed in the page")
            page.get_by_label("Message").press("Enter")
            expect(log).to_contain_text(f"[{room}] {nick}: typed in the page")
        finally:
            ctx.close()
            files.shutdown()
            files.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.mark.parametrize("name", ["browser.html", "client.py", "client.js"])
def test_docs_show_the_tested_source(name):
    """docs/clients.md shows each example exactly as it is in examples/ (and as tested here)."""
    assert (EXAMPLES / name).read_text() in DOC.read_text()
