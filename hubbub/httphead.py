"""A strict reader for HTTP/1.x request heads (RFC 9112), without the ``email`` package.

pywsgi parses headers with ``http.client.parse_headers`` - the ``email`` package's
feed parser, a few objects per header line and the largest single cost of a login
(docs/benchmarks.md). A WebSocket upgrade needs a dozen short lines split at the colon:
that is all this does, with the checks that keep requests unambiguous:

* the request line is ``method SP target SP HTTP/1.0|1.1`` (anything else: 400);
* field names are tokens, no whitespace before the colon (§5.1), no obsolete line
  folding (§5.2): 400;
* the head (request line + fields) is at most ``max_bytes`` and 100 fields: else 431;
* ``Content-Length`` must be digits, and several must agree (§6.3: a smuggling shape;
  nginx answers 400 too); ``Transfer-Encoding`` other than ``chunked``, or together with
  ``Content-Length``, is 400 (§6.1).

``read_head`` reads a head line by line from a buffered reader (pywsgi's path);
``parse_head`` takes a whole head already in hand (the upgrade's fast path in
hubbub/transport.py, which peeks it off the socket in one ``recv``): the same rules,
checked by one regex over the block instead of one per line.

Pure apart from ``rfile.readline``; tested in tests/unit/test_httphead.py.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

__all__ = [
    "Head",
    "HttpError",
    "REASONS",
    "cgi_headers",
    "parse_head",
    "read_head",
    "response",
    "unquote_path",
]

MAX_FIELDS = 100

_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\s]+) (HTTP/\d\.\d)\r?\n")
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*\r?\n")
# A whole block of field lines and the empty line after them: what _FIELD accepts line by
# line (a token, a colon, a value without CR or LF), with no room for obsolete folding (a
# line starting with whitespace is not a token) or a stray CR inside a value.
_FIELD_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[^\r\n]*\r?\n)*\r?\n")
_DIGITS = re.compile(r"\d{1,18}")

REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class HttpError(ValueError):
    """The request cannot be served; ``status`` is the answer (pywsgi turns a ValueError
    from ``read_request`` into a response without a traceback)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Head(NamedTuple):
    """One parsed request head."""

    method: str
    target: str
    version: str  #: "HTTP/1.0" or "HTTP/1.1"
    fields: dict[str, str]  #: lower-case name -> value (repeats joined with ", ")
    content_length: int | None
    chunked: bool
    close: bool  #: the connection ends after this request


def _request_line(line: bytes, max_bytes: int) -> tuple[str, str, str]:
    if len(line) > max_bytes:
        raise HttpError(431, "request line too long")
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise HttpError(400, "malformed request line")
    method, target, version = match.group(1, 2, 3)
    method, target, version = (
        method.decode("latin-1"),
        target.decode("latin-1"),
        version.decode("latin-1"),
    )
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, f"unsupported version {version}")  # nginx: 400 too
    return method, target, version


def read_head(request_line: str, rfile: Any, max_bytes: int) -> Head:
    """Parse ``request_line`` (as read, with its line end) and the fields that follow in
    ``rfile`` (a buffered reader), up to the empty line. Raises HttpError."""
    line = request_line.encode("latin-1")
    size = len(line)
    method, target, version = _request_line(line, max_bytes)
    pairs: list[tuple[str, str]] = []
    while True:
        raw = rfile.readline(max_bytes - size + 1)
        size += len(raw)
        if size > max_bytes:
            raise HttpError(431, "request head too large")
        if raw in (b"\r\n", b"\n"):
            break
        if not raw.endswith(b"\n"):
            raise HttpError(400, "incomplete request head")
        if raw[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding")  # RFC 9112 §5.2
        field = _FIELD.fullmatch(raw)
        if field is None or b"\r" in field.group(2):
            raise HttpError(400, "malformed header field")
        if len(pairs) >= MAX_FIELDS:
            raise HttpError(431, "too many header fields")
        pairs.append((field.group(1).decode("latin-1"), field.group(2).decode("latin-1")))
    return _head(method, target, version, pairs)


def parse_head(data: bytes, max_bytes: int) -> Head:
    """Parse a complete head: the request line, the fields and the empty line that ends
    them (``data`` ends there: nothing of a body). The same answers as ``read_head``
    for the same bytes, except that which error a head with several wins may differ."""
    if len(data) > max_bytes:
        raise HttpError(431, "request head too large")
    cut = data.find(b"\n") + 1
    if cut == 0:
        raise HttpError(400, "incomplete request head")
    method, target, version = _request_line(data[:cut], max_bytes)
    block = data[cut:]
    if _FIELD_BLOCK.fullmatch(block) is None:
        if block[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding")  # RFC 9112 §5.2
        raise HttpError(400, "malformed header field")
    # The block is known to be well formed: every line but the last (the empty one) is
    # `token:value` with no CR but one before its LF, so plain splits find the fields.
    lines = block.decode("latin-1").split("\n")[:-2]
    if len(lines) > MAX_FIELDS:
        raise HttpError(431, "too many header fields")
    pairs = []
    for line in lines:
        name, _, value = line.partition(":")
        pairs.append((name, value.rstrip("\r").strip(" \t")))
    return _head(method, target, version, pairs)


def _head(method: str, target: str, version: str, pairs: list[tuple[str, str]]) -> Head:
    """The checks that need every field: lengths, transfer coding, connection."""
    fields: dict[str, str] = {}
    lengths: set[str] = set()
    for raw_name, value in pairs:
        name = raw_name.lower()
        if name == "content-length":
            lengths.update(v.strip() for v in value.split(","))
        if name in fields:
            fields[name] += ("; " if name == "cookie" else ", ") + value
        else:
            fields[name] = value

    content_length = None
    if lengths:
        if len(lengths) > 1 or not all(_DIGITS.fullmatch(v) for v in lengths):
            raise HttpError(400, "conflicting or invalid Content-Length")  # RFC 9112 §6.3
        content_length = int(lengths.pop())
        fields["content-length"] = str(content_length)
    chunked = False
    if "transfer-encoding" in fields:
        if fields["transfer-encoding"].strip().lower() != "chunked" or version != "HTTP/1.1":
            raise HttpError(400, "unsupported Transfer-Encoding")
        if content_length is not None:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")  # RFC 9112 §6.1
        chunked = True
    connection = fields.get("connection", "").lower()
    if version == "HTTP/1.1":
        close = "close" in connection
    else:
        close = "keep-alive" not in connection
    return Head(method, target, version, fields, content_length, chunked, close)


def cgi_headers(fields: dict[str, str]) -> dict[str, str]:
    """The WSGI environ entries for ``fields`` (PEP 3333): ``HTTP_NAME``, plus
    ``CONTENT_TYPE`` and ``CONTENT_LENGTH``. A name with ``_`` is dropped: it would be
    indistinguishable from its ``-`` twin (header spoofing behind proxies)."""
    env = {}
    for name, value in fields.items():
        if "_" in name:
            continue
        if name == "content-type":
            env["CONTENT_TYPE"] = value
        elif name == "content-length":
            env["CONTENT_LENGTH"] = value
        else:
            env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def unquote_path(path: str) -> str:
    """PATH_INFO: percent-decoded, as latin-1 (PEP 3333)."""
    return unquote_to_bytes(path).decode("latin-1") if "%" in path else path


def response(status: int, reason: str) -> bytes:
    """A complete, bodiless error response that closes the connection."""
    return (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").encode(
        "latin-1"
    )
