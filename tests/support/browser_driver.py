"""A real browser for the tests: Playwright for Python driving the machine's Chromium.

Playwright's own browser download does not work on these machines (and CI installs
Debian's ``chromium`` instead, see ``.ci/run``), so we launch the system binary.

Playwright's sync API runs in-process, under the gevent monkey-patching of
tests/conftest.py: it drives its asyncio loop from a greenlet, and the loop's
selector is gevent's, so while a test waits on the page the gevent hub keeps
running the test's own greenlets (the ``websockets`` clients, the ``NetworkCut``
proxy below). That is what lets one test drive a page, a raw client and a
flaky network at once.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import pytest
from gevent.server import StreamServer

CHROMIUM = os.environ.get("HUBBUB_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

# --headless=new: the real browser without a window.  The --disable-* flags stop
# Chromium's own background traffic (updates, sync, safe browsing lists): on a
# closed network those connections are refused, and waiting on them slows start-up.
ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PHONE = {"width": 390, "height": 844}
"""A phone-width viewport (CSS pixels), for the narrow layout."""


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Chromium (a Playwright ``Browser``); skips the test when there is none."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


class NetworkCut:
    """A TCP proxy in front of a server that the test can cut, like a network drop.

    Pages load from ``url`` and their sockets run through the proxy. ``cut()`` drops
    every open connection at once (the page sees its socket die, code 1006, exactly as
    when the server or the network goes away) and refuses new ones until ``restore()``,
    so the page stays offline for as long as the test needs.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.down = False
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.server = StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _serve(self, client: socket.socket, _addr: Any) -> None:
        if self.down:
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        pair = (client, upstream)
        self.pairs.add(pair)
        pumps = [
            gevent.spawn(self._pump, client, upstream),
            gevent.spawn(self._pump, upstream, client),
        ]
        try:
            gevent.joinall(pumps, count=1)
        finally:
            self.pairs.discard(pair)
            self._close(pair)
            gevent.killall(pumps)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    @staticmethod
    def _close(pair: tuple[socket.socket, socket.socket]) -> None:
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        self.down = True
        for pair in list(self.pairs):
            self._close(pair)

    def restore(self) -> None:
        self.down = False

    def stop(self) -> None:
        self.cut()
        self.server.stop()
