"""Frame formats (docs/protocol.md "The chat protocol"): strict decoding with the contract's error codes."""

import json

import pytest

from actors.core import codec
from actors.core.codec import DecodeError, Dm, Hello, Join, Profile, Say


def code_of(text) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(text)
    return info.value.code


class TestDecode:
    def test_valid_messages(self):
        """Each client type decodes to its dataclass; unknown fields are ignored."""
        assert codec.decode('{"type":"hello","client":"x","extra":1}') == Hello("x")
        assert codec.decode('{"type":"profile","nick":"a_b-9"}') == Profile("a_b-9")
        assert codec.decode('{"type":"join","room":"r","since":0}') == Join("r", 0)
        assert codec.decode('{"type":"say","room":"r","text":"hi","id":"1"}') == Say("r", "hi", "1")
        assert codec.decode('{"type":"dm","to":"b","text":"hi"}') == Dm("b", "hi")

    @pytest.mark.parametrize("text", ["", "{", "nul", "[1,", "\x00"])
    def test_bad_json(self, text):
        """Text that is not JSON → bad_json."""
        assert code_of(text) == "bad_json"

    @pytest.mark.parametrize("obj", [
        [], 1, "hello", None, {}, {"type": 1}, {"type": "nope"},
        {"type": "join"}, {"type": "join", "room": 5}, {"type": "join", "room": "a b"},
        {"type": "join", "room": "r", "since": -1}, {"type": "join", "room": "r", "since": True},
        {"type": "join", "room": "r", "since": "3"}, {"type": "say", "room": "r"},
        {"type": "say", "room": "r", "text": ""}, {"type": "say", "room": "r", "text": 5},
        {"type": "say", "room": "r", "text": "x", "id": 5}, {"type": "dm", "text": "x"},
        {"type": "profile"}, {"type": "profile", "nick": 3}, {"type": "profile", "nick": "a", "info": []},
        {"type": "hello", "client": 7}, {"type": "leave", "room": "x" * 33},
    ])
    def test_bad_message(self, obj):
        """Wrong shapes, missing or mistyped fields, unknown types → bad_message."""
        assert code_of(json.dumps(obj)) == "bad_message"

    @pytest.mark.parametrize("nick", ["", "a" * 33, "a b", "é", "a!", "аlice"])
    def test_bad_nick(self, nick):
        """A string nick outside 1-32 [A-Za-z0-9_-] → bad_nick (look-alike Unicode included)."""
        assert code_of(json.dumps({"type": "profile", "nick": nick})) == "bad_nick"

    @pytest.mark.parametrize("text", ['{"type":"say","room":"r","text":"\\ud800"}',
                                      '{"type":"say","room":"r","text":"ok","id":"\\udc00"}',
                                      '{"type":"dm","to":"b","text":"\\udfff"}',
                                      '{"type":"hello","client":"\\ud83d"}'])
    def test_lone_surrogates_are_bad_message(self, text):
        """A JSON-escaped lone surrogate in any echoed string → bad_message (it could not be re-encoded)."""
        assert code_of(text) == "bad_message"

    def test_binary_frames_are_bad_message(self):
        """Binary payloads are not part of the protocol → bad_message."""
        assert code_of(b'{"type":"hello"}') == "bad_message"

    def test_deep_nesting_is_bad_json_not_a_crash(self):
        """100k nested arrays do not blow the stack."""
        assert code_of("[" * 100_000 + "]" * 100_000) in ("bad_json", "bad_message")


class TestEncode:
    def test_compact_utf8(self):
        """Frames are compact JSON, UTF-8, non-ASCII kept as is."""
        assert codec.encode(codec.dm("a", "héllo", 1.5)) == '{"type":"dm","from":"a","text":"héllo","ts":1.5}'.encode()

    def test_bye_detail_only_when_given(self):
        """bye carries `message` only with a detail."""
        assert codec.bye("kicked") == {"type": "bye", "reason": "kicked"}
        assert codec.bye("kicked", "spam")["message"] == "spam"
