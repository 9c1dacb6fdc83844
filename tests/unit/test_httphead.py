"""hubbub.httphead: strict HTTP/1.x request heads (RFC 9112), from bytes."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub.httphead import HttpError, cgi_headers, parse_head, read_head


def _read(head: bytes, max_bytes: int = 4096):
    line, _, rest = head.partition(b"\n")
    return read_head(
        (line + b"\n").decode("latin-1"), io.BufferedReader(io.BytesIO(rest)), max_bytes
    )


def _whole(head: bytes, max_bytes: int = 4096):
    return parse_head(head, max_bytes)


@pytest.fixture(params=[_read, _whole], ids=["read_head", "parse_head"])
def parse(request):
    """Every rule holds for both readers: line by line (pywsgi's path) and a whole head
    peeked off the socket (the upgrade's fast path)."""
    return request.param


class TestRequestHead:
    """RFC 9112 §3 and §5: request line and fields."""

    def test_upgrade_request(self, parse):
        """A browser's upgrade request parses into lower-case fields."""
        head = parse(
            b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        assert (head.method, head.target, head.version) == ("GET", "/ws?x=1", "HTTP/1.1")
        assert head.fields == {"host": "a", "upgrade": "websocket", "connection": "Upgrade"}
        assert head.content_length is None and not head.chunked and not head.close

    def test_repeated_fields_are_joined(self, parse):
        """Repeats join with ", " (cookies with "; ")."""
        head = parse(b"GET / HTTP/1.1\r\nA: 1\r\nA: 2\r\nCookie: x=1\r\nCookie: y=2\r\n\r\n")
        assert head.fields["a"] == "1, 2" and head.fields["cookie"] == "x=1; y=2"

    def test_bare_lf_line_ends(self, parse):
        """A bare LF ends a line too (§2.2)."""
        assert parse(b"GET / HTTP/1.1\nHost: a\n\n").fields == {"host": "a"}

    @pytest.mark.parametrize(
        "head",
        [
            b"GET /\r\n\r\n",  # HTTP/0.9
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # whitespace before the colon (§5.1)
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obs-fold (§5.2)
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a",  # the head never ends
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ],
    )
    def test_malformed_is_400(self, head, parse):
        """Ambiguous or malformed heads are 400 (never a guess)."""
        with pytest.raises(HttpError) as error:
            parse(head)
        assert error.value.status == 400

    def test_same_content_length_twice_is_fine(self, parse):
        """Identical repeated Content-Length values are one length (§6.3)."""
        assert (
            parse(
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"
            ).content_length
            == 3
        )

    def test_too_large_is_431(self, parse):
        """A head over max_bytes is 431."""
        with pytest.raises(HttpError) as error:
            parse(b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n")
        assert error.value.status == 431

    def test_too_many_fields_is_431(self, parse):
        """More than 100 fields is 431."""
        with pytest.raises(HttpError) as error:
            parse(b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n", max_bytes=10_000)
        assert error.value.status == 431

    def test_connection_close_rules(self, parse):
        """HTTP/1.1 keeps alive unless "close"; HTTP/1.0 closes unless "keep-alive"."""
        assert parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").close
        assert parse(b"GET / HTTP/1.0\r\n\r\n").close
        assert not parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close


def test_cgi_headers_drop_underscored_names():
    """PEP 3333 names; a name with "_" is dropped (it would shadow its "-" twin)."""
    env = cgi_headers({"x-a": "1", "x_a": "2", "content-type": "t", "content-length": "3"})
    assert env == {"HTTP_X_A": "1", "CONTENT_TYPE": "t", "CONTENT_LENGTH": "3"}


def _outcome(reader, head: bytes):
    try:
        return reader(head)
    except HttpError as error:
        return error.status


_PIECES = [
    b"GET / HTTP/1.1\r\n",
    b"GET /ws?a=%41 HTTP/1.0\n",
    b"Host: a\r\n",
    b"Upgrade: websocket\r\n",
    b"Content-Length: 3\r\n",
    b"content-length: 4\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"X:\t v \t\r\n",
    b" folded\r\n",
    b"Bad Name: x\r\n",
    b"X: a\rb\r\n",
    b"X: \xff\r\n",
    b"Cookie: c=1\r\n",
    b"\r\n",
    b"\n",
]


@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=12))
def test_both_readers_agree(pieces):
    """For any complete head (up to its first empty line), parse_head gives what
    read_head gives: the same Head, or an error with the same status."""
    lines = b"".join(pieces).split(b"\n")
    lines = [line + b"\n" for line in lines[:-1]]
    ends = [i for i, line in enumerate(lines) if i and line in (b"\r\n", b"\n")]
    if not ends:
        return  # the head never ends: both readers would wait for more
    head = b"".join(lines[: ends[0] + 1])
    assert _outcome(_whole, head) == _outcome(_read, head)
