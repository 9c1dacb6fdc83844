"""hubbub.wsproto: the WebSocket protocol, byte for byte, with no socket (RFC 6455).

Bytes in through ``receive_data``, events and ``data_to_send()`` bytes out - the way
websockets' ``tests/test_protocol.py`` and h11's tests drive their Sans-I/O cores.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub.wsproto import (
    BinaryMessage,
    Budget,
    CloseCode,
    CloseReceived,
    Opcode,
    Ping,
    Pong,
    Protocol,
    State,
    TextMessage,
    Violation,
    close_payload,
    frame_header,
    text_frame,
)  # fmt: skip

MASK = b"\x37\xfa\x21\x3d"


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length_form: int | None = None,
) -> bytes:
    """A client frame (masked with MASK); ``length_form`` 126/127 forces that length escape."""
    n = len(payload)
    first = bytes(((0x80 if fin else 0) | rsv | opcode,))
    bit = 0x80 if masked else 0
    form = length_form or (n if n < 126 else 126 if n < 0x10000 else 127)
    if form == 126:
        head = first + struct.pack("!BH", bit | 126, n)
    elif form == 127:
        head = first + struct.pack("!BQ", bit | 127, n)
    else:
        head = first + bytes((bit | n,))
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    return frame_header(opcode, len(payload)) + payload


def close_body(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@pytest.fixture
def proto() -> Protocol:
    return Protocol(max_message=1000)


class TestDataFrames:
    """RFC 6455 §5.6: text and binary messages."""

    def test_text_frame_is_a_text_message(self, proto):
        """A masked final text frame gives one TextMessage; nothing to send."""
        assert proto.receive_data(client_frame(Opcode.TEXT, b"hello")) == [TextMessage("hello")]
        assert proto.data_to_send() == b""

    def test_binary_frame_is_a_binary_message(self, proto):
        """A binary frame gives BinaryMessage with the unmasked bytes."""
        assert proto.receive_data(client_frame(Opcode.BINARY, b"\x00\xff")) == [
            BinaryMessage(b"\x00\xff")
        ]

    def test_empty_text_frame(self, proto):
        """An empty text frame is an empty message."""
        assert proto.receive_data(client_frame(Opcode.TEXT)) == [TextMessage("")]

    def test_bytes_arrive_one_at_a_time(self, proto):
        """A frame split into single bytes completes at its last byte, not before."""
        wire = client_frame(Opcode.TEXT, b"x" * 300)
        events = [proto.receive_data(wire[i : i + 1]) for i in range(len(wire))]
        assert events[:-1] == [[]] * (len(wire) - 1)
        assert events[-1] == [TextMessage("x" * 300)]

    def test_several_frames_in_one_read(self, proto):
        """Two frames in one chunk give two events, in order."""
        wire = client_frame(Opcode.TEXT, b"a") + client_frame(Opcode.TEXT, b"b")
        assert proto.receive_data(wire) == [TextMessage("a"), TextMessage("b")]

    def test_extended_lengths(self):
        """16- and 64-bit lengths in their shortest form are accepted (§5.2)."""
        big = Protocol(max_message=100_000)
        assert big.receive_data(client_frame(Opcode.BINARY, b"a" * 200)) == [
            BinaryMessage(b"a" * 200)
        ]
        assert big.receive_data(client_frame(Opcode.BINARY, b"b" * 70_000)) == [
            BinaryMessage(b"b" * 70_000)
        ]

    def test_message_at_the_limit(self, proto):
        """A message of exactly max_message bytes is accepted."""
        assert proto.receive_data(client_frame(Opcode.BINARY, b"z" * 1000)) == [
            BinaryMessage(b"z" * 1000)
        ]


class TestFraming:
    """RFC 6455 §5.2-§5.5: every broken frame is a 1002 decided from the header."""

    @pytest.mark.parametrize(
        ("wire", "code", "reason"),
        [
            (client_frame(Opcode.TEXT, b"x", masked=False), 1002, "unmasked client frame"),
            (client_frame(Opcode.TEXT, b"x", rsv=0x40), 1002, "reserved bits set"),
            (client_frame(Opcode.TEXT, b"x", rsv=0x20), 1002, "reserved bits set"),
            (client_frame(Opcode.TEXT, b"x", rsv=0x10), 1002, "reserved bits set"),
            (client_frame(0x3, b"x"), 1002, "unknown opcode"),
            (client_frame(0xB, b"x"), 1002, "unknown opcode"),
            (client_frame(Opcode.PING, b"x", fin=False), 1002, "fragmented control frame"),
            (client_frame(Opcode.PING, b"x" * 126), 1002, "control frame too long"),
            (client_frame(Opcode.CONT, b"x"), 1002, "continuation without a start"),
            (
                client_frame(Opcode.TEXT, b"x" * 10, length_form=126),
                1002,
                "length not in its shortest form",
            ),
            (
                client_frame(Opcode.TEXT, b"x" * 300, length_form=127),
                1002,
                "length not in its shortest form",
            ),
        ],
    )
    def test_violations(self, proto, wire, code, reason):
        """The frame is refused with a close frame carrying the code; state CLOSING."""
        assert proto.receive_data(wire) == [Violation(code, reason)]
        assert proto.data_to_send() == server_frame(Opcode.CLOSE, close_body(code, reason))
        assert proto.state is State.CLOSING and proto.close_code == code

    def test_decided_from_the_first_two_bytes(self, proto):
        """An unmasked frame is refused before its length, mask or payload arrive."""
        assert proto.receive_data(b"\x81\x7f") == [Violation(1002, "unmasked client frame")]

    def test_top_bit_of_64_bit_length(self, proto):
        """A 64-bit length with the most significant bit set is 1002 (§5.2)."""
        wire = b"\x82\xff" + struct.pack("!Q", 1 << 63)
        assert proto.receive_data(wire) == [Violation(1002, "64-bit length with the top bit set")]

    def test_too_big_is_1009_before_the_payload(self, proto):
        """A header announcing more than max_message: 1009 with no payload buffered."""
        wire = b"\x82\xff" + struct.pack("!Q", 1 << 40)
        assert proto.receive_data(wire) == [Violation(1009, "message too big")]
        assert proto.data_to_send() == server_frame(
            Opcode.CLOSE, close_body(1009, "message too big")
        )

    def test_reassembled_message_over_the_limit(self, proto):
        """Fragments that add up to more than max_message: 1009 at the fragment that
        crosses it."""
        assert proto.receive_data(client_frame(Opcode.BINARY, b"a" * 600, fin=False)) == []
        assert proto.receive_data(client_frame(Opcode.CONT, b"a" * 600)) == [
            Violation(1009, "message too big")
        ]

    def test_new_message_inside_a_fragmented_one(self, proto):
        """A text frame while a fragmented message is open is 1002 (§5.4)."""
        proto.receive_data(client_frame(Opcode.TEXT, b"a", fin=False))
        assert proto.receive_data(client_frame(Opcode.TEXT, b"b")) == [
            Violation(1002, "new data frame inside a fragmented message")
        ]

    def test_answers_to_earlier_messages_precede_the_close(self, proto):
        """A valid message, then a broken frame in the same read: what the app sends in
        answer to the message (between next_event calls) goes out before the close frame
        (Autobahn 3.2: echo, then fail)."""
        proto.feed(client_frame(Opcode.TEXT, b"hi") + client_frame(Opcode.TEXT, b"x", rsv=0x20))
        assert proto.next_event() == TextMessage("hi")
        proto.send_text(b"hi")
        assert proto.next_event() == Violation(1002, "reserved bits set")
        assert proto.next_event() is None
        assert proto.data_to_send() == server_frame(Opcode.TEXT, b"hi") + server_frame(
            Opcode.CLOSE, close_body(1002, "reserved bits set")
        )

    def test_input_after_a_violation_is_discarded(self, proto):
        """Once out of sync, everything until EOF is ignored."""
        proto.receive_data(client_frame(Opcode.TEXT, b"x", masked=False))
        proto.data_to_send()
        assert proto.receive_data(client_frame(Opcode.TEXT, b"valid")) == []
        assert proto.data_to_send() == b""


class TestFragmentation:
    """RFC 6455 §5.4: fragments, interleaved control frames, UTF-8 across fragments."""

    def test_fragments_are_reassembled(self, proto):
        """Three text fragments make one message."""
        wire = (
            client_frame(Opcode.TEXT, b"ab", fin=False)
            + client_frame(Opcode.CONT, b"cd", fin=False)
            + client_frame(Opcode.CONT, b"ef")
        )
        assert proto.receive_data(wire) == [TextMessage("abcdef")]

    def test_control_frame_between_fragments(self, proto):
        """A ping between fragments is handled at once; the message completes after."""
        wire = (
            client_frame(Opcode.BINARY, b"1", fin=False)
            + client_frame(Opcode.PING, b"p")
            + client_frame(Opcode.CONT, b"2")
        )
        assert proto.receive_data(wire) == [Ping(b"p"), BinaryMessage(b"12")]
        assert proto.data_to_send() == server_frame(Opcode.PONG, b"p")

    def test_utf8_split_across_fragments(self, proto):
        """A character split between fragments is fine."""
        euro = "€".encode()
        wire = client_frame(Opcode.TEXT, euro[:1], fin=False) + client_frame(Opcode.CONT, euro[1:])
        assert proto.receive_data(wire) == [TextMessage("€")]

    def test_invalid_utf8_fails_at_the_first_bad_fragment(self, proto):
        """Invalid UTF-8 in the first fragment is 1007 before the message ends (fail fast)."""
        assert proto.receive_data(client_frame(Opcode.TEXT, b"\xce\xba\xff", fin=False)) == [
            Violation(1007, "invalid UTF-8")
        ]

    def test_invalid_utf8_in_one_frame(self, proto):
        """An unfragmented text frame that is not UTF-8 is 1007 (§8.1)."""
        assert proto.receive_data(client_frame(Opcode.TEXT, b"\xed\xa0\x80")) == [
            Violation(1007, "invalid UTF-8")
        ]

    def test_truncated_utf8_at_the_end_is_1007(self, proto):
        """A final fragment that ends inside a character is 1007."""
        wire = client_frame(Opcode.TEXT, b"a", fin=False) + client_frame(Opcode.CONT, b"\xe2\x82")
        assert proto.receive_data(wire) == [Violation(1007, "invalid UTF-8")]


class TestControlFrames:
    """RFC 6455 §5.5.2-§5.5.3: ping and pong."""

    def test_ping_is_answered_with_the_same_payload(self, proto):
        """A ping gives a Ping event and a pong with its payload."""
        assert proto.receive_data(client_frame(Opcode.PING, b"hi")) == [Ping(b"hi")]
        assert proto.data_to_send() == server_frame(Opcode.PONG, b"hi")

    def test_every_ping_is_answered_while_the_peer_reads(self, proto):
        """10 pings in one read: 10 pongs, in order (Autobahn 2.10)."""
        wire = b"".join(client_frame(Opcode.PING, b"%d" % i) for i in range(10))
        assert len(proto.receive_data(wire)) == 10
        assert proto.data_to_send() == b"".join(
            server_frame(Opcode.PONG, b"%d" % i) for i in range(10)
        )

    def test_only_the_newest_pong_is_pending_while_the_peer_does_not_read(self, proto):
        """With coalesce_pongs (the transport's writes are blocked), 100 pings leave one
        pong: the last ping's (§5.5.3). A ping flood cannot grow the outbox."""
        proto.coalesce_pongs = True
        wire = b"".join(client_frame(Opcode.PING, b"%d" % i) for i in range(100))
        assert len(proto.receive_data(wire)) == 100
        assert proto.out_bytes == 0
        assert proto.data_to_send() == server_frame(Opcode.PONG, b"99")

    def test_pending_pong_goes_first(self, proto):
        """The pong kept while coalescing is written before queued data."""
        proto.send_text(b"data")
        proto.coalesce_pongs = True
        proto.receive_data(client_frame(Opcode.PING, b"p"))
        assert proto.data_to_send() == server_frame(Opcode.PONG, b"p") + server_frame(
            Opcode.TEXT, b"data"
        )

    def test_unsolicited_pong_is_reported(self, proto):
        """A pong nobody asked for is an event and nothing is sent."""
        assert proto.receive_data(client_frame(Opcode.PONG, b"x")) == [Pong(b"x")]
        assert proto.data_to_send() == b""

    def test_server_ping(self, proto):
        """send_ping queues a ping; over 125 bytes is refused."""
        proto.send_ping(b"t")
        assert proto.data_to_send() == server_frame(Opcode.PING, b"t")
        with pytest.raises(ValueError):
            proto.send_ping(b"x" * 126)


class TestClosingHandshake:
    """RFC 6455 §5.5.1, §7: closing from either side."""

    def test_peer_close_is_echoed(self, proto):
        """The peer's close frame is answered with the same code; state CLOSED."""
        events = proto.receive_data(client_frame(Opcode.CLOSE, close_body(4321, "done")))
        assert events == [CloseReceived(4321, "done")]
        assert proto.data_to_send() == server_frame(Opcode.CLOSE, close_body(4321, "done"))
        assert proto.state is State.CLOSED and (proto.close_code, proto.close_reason) == (
            4321,
            "done",
        )

    def test_empty_close_is_answered_with_1000_and_reported_1005(self, proto):
        """A close frame without a code: echo 1000, report 1005 (§7.1.5)."""
        assert proto.receive_data(client_frame(Opcode.CLOSE)) == [CloseReceived(1005, "")]
        assert proto.data_to_send() == server_frame(Opcode.CLOSE, close_body(1000))
        assert proto.close_code == CloseCode.NO_STATUS

    @pytest.mark.parametrize(
        ("payload", "code"),
        [
            (b"\x03", 1002),  # a 1-byte body
            (close_body(1005), 1002),  # local-only code
            (close_body(1006), 1002),
            (close_body(999), 1002),
            (close_body(2000), 1002),  # reserved range
            (close_body(5000), 1002),
            (close_body(1000) + b"\xff", 1007),  # reason not UTF-8
        ],
    )
    def test_invalid_close_frames(self, proto, payload, code):
        """A close frame with a bad code or reason is a violation with its code."""
        [event] = proto.receive_data(client_frame(Opcode.CLOSE, payload))
        assert type(event) is Violation and event.code == code

    def test_server_close_then_peer_answer(self, proto):
        """send_close: CLOSING, then data is dropped, the peer's close makes it CLOSED."""
        proto.send_close(4005, "kicked")
        assert proto.state is State.CLOSING
        assert proto.data_to_send() == server_frame(Opcode.CLOSE, close_body(4005, "kicked"))
        proto.send_text(b"late")  # nothing may follow a close frame (§5.5.1)
        assert proto.data_to_send() == b""
        assert proto.receive_data(client_frame(Opcode.TEXT, b"dropped")) == []
        assert proto.receive_data(client_frame(Opcode.CLOSE, close_body(4005))) == [
            CloseReceived(4005, "")
        ]
        assert proto.state is State.CLOSED and proto.close_code == 4005
        assert proto.data_to_send() == b""  # no echo of an answer

    def test_ping_before_close_is_still_answered(self, proto):
        """A pending pong goes out before our close frame."""
        proto.receive_data(client_frame(Opcode.PING, b"p"))
        proto.send_close(1000)
        assert proto.data_to_send() == server_frame(Opcode.PONG, b"p") + server_frame(
            Opcode.CLOSE, close_body(1000)
        )

    def test_send_close_refuses_local_codes(self, proto):
        """1005 and 1006 may never be sent (§7.4.1)."""
        for code in (1005, 1006, 1015, 999):
            with pytest.raises(ValueError):
                proto.send_close(code)
        assert proto.state is State.OPEN

    def test_eof_without_close_is_1006(self, proto):
        """The stream ends without a close frame: CLOSED, close_code 1006."""
        proto.receive_eof()
        assert proto.state is State.CLOSED and proto.close_code == 1006

    def test_reason_is_cut_on_a_character_boundary(self):
        """The reason is cut to 123 bytes without splitting a character (§5.5)."""
        body, sent = close_payload(4000, "é" * 100)
        assert len(body) == 2 + 122 and sent == "é" * 61


class TestBudget:
    """Issue 15: every frame kind counts against the per-connection budget."""

    @pytest.mark.parametrize(
        "frame",
        [
            client_frame(Opcode.PING, b"x" * 125),
            client_frame(Opcode.PONG),
            client_frame(Opcode.TEXT),
        ],
    )
    def test_any_frame_kind_over_budget_is_4006(self, frame):
        """The 11th frame of any kind in one window with a budget of 10: close 4006."""
        proto = Protocol(budget=Budget(frames=10, nbytes=0, window=1.0))
        proto.coalesce_pongs = True  # a flooder that does not read
        events = proto.receive_data(frame * 11, now=5.0)
        assert events[-1] == Violation(4006, "rate_limited") and len(events) == 11
        assert proto.data_to_send().endswith(
            server_frame(Opcode.CLOSE, close_body(4006, "rate_limited"))
        )

    def test_empty_continuation_frames_count(self):
        """Empty continuation frames are frames too."""
        proto = Protocol(budget=Budget(frames=10, nbytes=0))
        wire = (
            client_frame(Opcode.TEXT, b"a", fin=False) + client_frame(Opcode.CONT, fin=False) * 20
        )
        assert proto.receive_data(wire, now=0.0) == [Violation(4006, "rate_limited")]

    def test_bytes_count(self):
        """Bytes over the byte budget: 4006."""
        proto = Protocol(budget=Budget(frames=0, nbytes=100))
        assert proto.receive_data(client_frame(Opcode.BINARY, b"x" * 200), now=0.0) == [
            Violation(4006, "rate_limited")
        ]

    def test_a_new_window_starts_fresh(self):
        """The counts reset when the window has passed."""
        proto = Protocol(budget=Budget(frames=10, nbytes=0, window=1.0))
        frame = client_frame(Opcode.PONG)
        assert len(proto.receive_data(frame * 10, now=0.0)) == 10
        assert len(proto.receive_data(frame * 10, now=1.0)) == 10
        assert proto.state is State.OPEN

    def test_zero_turns_the_limits_off(self):
        """Budget(0, 0) never refuses."""
        budget = Budget(0, 0)
        assert all(budget.charge(1 << 20, 0.0) for _ in range(10_000))


class TestSending:
    """Server frames: unmasked, final, shortest length form."""

    @pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
    def test_text_frame_headers(self, proto, n):
        """send_text writes the shortest header for the length (§5.2) and counts bytes."""
        proto.send_text(b"a" * n)
        assert proto.out_bytes == len(frame_header(Opcode.TEXT, n)) + n
        assert proto.data_to_send() == server_frame(Opcode.TEXT, b"a" * n)
        assert proto.out_bytes == 0

    def test_queued_frames_coalesce(self, proto):
        """Everything queued leaves as one buffer, in order."""
        proto.send_text(b"1")
        proto.send_binary(b"2")
        assert proto.data_to_send() == server_frame(Opcode.TEXT, b"1") + server_frame(
            Opcode.BINARY, b"2"
        )

    @pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
    def test_text_to_send_is_the_queued_frame(self, proto, n):
        """text_to_send gives exactly the bytes send_text + data_to_send would, and
        queues nothing."""
        payload = b"a" * n
        assert proto.text_to_send(payload) == server_frame(Opcode.TEXT, payload)
        assert proto.out_bytes == 0 and proto.data_to_send() == b""

    def test_text_to_send_builds_a_fan_out_frame_once(self, proto):
        """The same bytes object (a fan-out) gets the same frame object back; other
        bytes of equal content get a frame of their own, equal to it."""
        payload = b'{"type":"message"}'
        first = proto.text_to_send(payload)
        assert Protocol().text_to_send(payload) is first
        other = proto.text_to_send(bytes(bytearray(payload)))
        assert other == first and other is not first
        assert text_frame(bytearray(b"x")) == server_frame(Opcode.TEXT, b"x")

    def test_text_to_send_refuses_behind_queued_frames(self, proto):
        """Something queued (a frame, a pong) goes first: None, and the caller queues."""
        proto.send_text(b"1")
        assert proto.text_to_send(b"2") is None
        proto.data_to_send()
        proto.receive_data(client_frame(Opcode.PING, b"p"))
        assert proto.text_to_send(b"2") is None
        assert proto.data_to_send() == server_frame(Opcode.PONG, b"p")
        assert proto.text_to_send(b"2") == server_frame(Opcode.TEXT, b"2")

    def test_text_to_send_only_while_open(self, proto):
        """After our close frame (§5.5.1) there is no data frame to write."""
        proto.send_close(1000)
        proto.data_to_send()
        assert proto.text_to_send(b"late") is None


@given(
    messages=st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), max_size=8),
    cut=st.integers(min_value=1, max_value=50),
)
def test_any_split_gives_the_same_messages(messages, cut):
    """However the byte stream is cut, the same messages come out (hypothesis)."""
    proto = Protocol(max_message=100_000)
    wire = b"".join(
        client_frame(Opcode.TEXT, m.encode())
        if isinstance(m, str)
        else client_frame(Opcode.BINARY, m)
        for m in messages
    )
    events = []
    for i in range(0, len(wire), cut):
        events += proto.receive_data(wire[i : i + cut])
    assert [e.data for e in events] == messages


class TestFailFastInsideAFrame:
    """Autobahn 6.4.3-6.4.4: invalid UTF-8 fails as soon as it arrives, mid-frame."""

    def test_invalid_bytes_fail_before_the_frame_is_complete(self, proto):
        """The first 20 bytes of a 100-byte text frame hold invalid UTF-8: 1007 now."""
        wire = client_frame(Opcode.TEXT, b"ok" + b"\xff" + b"a" * 97)
        assert proto.receive_data(wire[: 2 + 4 + 20]) == [Violation(1007, "invalid UTF-8")]

    def test_valid_prefix_waits(self, proto):
        """A valid prefix, in pieces of any size, waits for the rest; the message is whole."""
        text = ("κόσμε€" * 20).encode()
        wire = client_frame(Opcode.TEXT, text)
        events = []
        for i in range(0, len(wire), 7):
            events += proto.receive_data(wire[i : i + 7])
        assert events == [TextMessage(text.decode())]

    def test_continuation_checked_with_the_message_state(self, proto):
        """A character split across fragments, the continuation arriving in pieces."""
        euro = "€".encode()
        proto.receive_data(client_frame(Opcode.TEXT, b"a" + euro[:1], fin=False))
        cont = client_frame(Opcode.CONT, euro[1:] + b"b" * 50)
        assert proto.receive_data(cont[:10]) == []
        assert proto.receive_data(cont[10:]) == [TextMessage("a€" + "b" * 50)]

    def test_continuation_with_invalid_bytes_fails_mid_frame(self, proto):
        """An invalid continuation of a split character fails before its frame ends."""
        euro = "€".encode()
        proto.receive_data(client_frame(Opcode.TEXT, euro[:1], fin=False))
        cont = client_frame(Opcode.CONT, b"\x41" + b"b" * 50)  # not a continuation byte
        assert proto.receive_data(cont[:8]) == [Violation(1007, "invalid UTF-8")]
