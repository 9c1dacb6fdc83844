"""End-to-end support: the real server process, and a chat client on the `websockets` library.

``Server`` runs ``python server.py --port 0 ...`` exactly as a user would, reads
the one "hubbub listening on ..." line for the real port, and on exit sends
SIGTERM and checks the process ended cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import gevent
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]


class Server:
    def __init__(
        self,
        *flags: str,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        script: str = "server.py",
    ) -> None:
        self.flags = flags
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
        full_env.update(env or {})
        # stderr goes to a file, not a pipe: nobody reads a pipe while a test runs,
        # and a server whose log pipe fills up blocks on its next log line.
        self._log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--port", "0", *flags],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE: never None
        match = re.match(r"hubbub listening on (https?)://([^:]+):(\d+)", line)
        if not match:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"server did not start: {line!r} {self.log()}")
        self.scheme, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
        self.url = f"{self.scheme}://{self.host}:{self.port}"
        self.ws_url = f"{'wss' if self.scheme == 'https' else 'ws'}://{self.host}:{self.port}/ws"
        self.stderr = ""

    # --- HTTP --------------------------------------------------------------------

    def http(
        self,
        path: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        data = (
            json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        )
        headers = dict(headers or {})
        if data is not None and not any(k.lower() == "content-type" for k in headers):
            # What a script posting JSON sends (urllib's default is a form's type, which
            # the admin routes refuse without a token: a web page can send forms).
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, path: str, **kw: Any) -> Any:
        status, _h, body = self.http(path, **kw)
        assert status == 200, (status, body)
        return json.loads(body)

    def actors(self) -> dict[str, Any]:
        return self.json("/debug/actors")["actors"]

    def users(self) -> list[dict[str, Any]]:
        return [n for n in walk(self.actors()) if "state" in n]  # user nodes, whatever their class

    def wait_for(self, predicate: Any, timeout: float = 5.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def os_threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]  # the kernel always writes this line

    # --- lifecycle ---------------------------------------------------------------

    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        self._log.seek(0)
        return self._log.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 8.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError("server did not exit in time") from None
        finally:
            self.stderr = self.log()
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    expect_tracebacks = False
    """Set by tests that make actors fail on purpose (pykka logs their tracebacks)."""

    def __exit__(self, *exc: Any) -> None:
        code = self.stop()
        assert self.expect_tracebacks or "Traceback" not in self.stderr, self.stderr
        assert code == 0, (code, self.stderr)


def walk(node: dict[str, Any]):
    yield node
    for child in node["children"]:
        yield from walk(child)


class Client:
    """A chat client: JSON in and out, answering the server's pings unless told not to."""

    def __init__(
        self, server: Server, *, origin: str | None = None, answer_pings: bool = True, **kw: Any
    ) -> None:
        self.server = server
        self.answer_pings = answer_pings
        self.ws: ClientConnection = connect(
            server.ws_url,
            origin=origin,
            open_timeout=5,  # type: ignore[arg-type]  # origin=None is accepted at run time (no Origin header)
            close_timeout=2,
            max_size=None,
            **kw,
        )
        self.session: str | None = None

    def send(self, frame: dict[str, Any] | str) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        while True:
            frame = json.loads(self.ws.recv(timeout=timeout))
            if frame["type"] == "ping" and self.answer_pings:
                self.send({"type": "pong"})
                continue
            return frame

    def pump(self, seconds: float) -> list[dict[str, Any]]:
        """Read (and answer pings) for a while; returns the other frames seen."""
        frames = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                break
            if frame["type"] == "ping" and self.answer_pings:
                self.send({"type": "pong"})
            else:
                frames.append(frame)
        return frames

    def expect(self, kind: str, timeout: float = 3.0, **fields: Any) -> dict[str, Any]:
        frame = self.recv(timeout)
        assert frame["type"] == kind, f"expected {kind}, got {frame}"
        for key, value in fields.items():
            assert frame.get(key) == value, f"{key}: expected {value!r} in {frame}"
        return frame

    def expect_error(self, code: str) -> dict[str, Any]:
        return self.expect("error", code=code)

    def hello(self) -> dict[str, Any]:
        self.send({"type": "hello", "client": "tests"})
        welcome = self.expect("welcome")
        self.session = welcome["session"]
        return welcome

    def login(self, nick: str, *rooms: str) -> Client:
        self.hello()
        self.send({"type": "profile", "nick": nick})
        self.expect("profile_ok", nick=nick)
        for room in rooms:
            self.join(room)
        return self

    def join(self, room: str, since: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        self.send(frame)
        return self.expect("joined", room=room)

    def say(self, room: str, text: str, msg_id: str | None = "m") -> dict[str, Any]:
        self.send({"type": "say", "room": room, "text": text, "id": msg_id})
        return self.expect("ack", id=msg_id)

    def closed(self, timeout: float = 5.0) -> tuple[int | None, str | None, list[dict[str, Any]]]:
        """Read until the server closes; returns (close code, reason, frames seen before)."""
        frames = []
        try:
            while True:
                frames.append(json.loads(self.ws.recv(timeout=timeout)))
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else None), frames

    def close(self) -> None:
        # The sync client holds one unread message at a time and stops reading the
        # socket until it is consumed, so it would never see the server's close frame
        # behind a backlog: drain while closing.
        drain = gevent.spawn(self._drain)
        try:
            self.ws.close()
        finally:
            drain.kill()

    def _drain(self) -> None:
        try:
            while True:
                self.ws.recv(timeout=2)
        except Exception:  # noqa: BLE001 - closed, timed out: either way we are done
            pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def raw_upgrade(
    server: Server, path: str = "/ws", headers: dict[str, str] | None = None
) -> tuple[socket.socket, bytes]:
    """A raw socket after a hand-written upgrade (for framing tests the library would refuse)."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    hdrs = {
        "Host": f"{server.host}:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    hdrs.update(headers or {})
    request = (
        f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    return sock, response


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One client frame built by hand (RFC 6455 §5.2)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mbit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def split_frame(buf: bytes) -> tuple[int, bytes, bytes] | None:
    """One unmasked server frame off the front of ``buf``: (opcode, payload, rest), or
    None while it is incomplete (RFC 6455 §5.2)."""
    if len(buf) < 2:
        return None
    n, off = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, off = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, off = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < off + n:
        return None
    return buf[0] & 0x0F, buf[off : off + n], buf[off + n :]


def read_close(sock: socket.socket, timeout: float = 5.0) -> tuple[int, str]:
    """Read server frames until a close frame; return its code and reason."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF without a close frame (got {buf[:80]!r})")
        buf += chunk
        while (got := split_frame(buf)) is not None:
            opcode, payload, buf = got
            if opcode == 8:
                return int.from_bytes(payload[:2], "big"), payload[2:].decode()
