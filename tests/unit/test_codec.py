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

    @pytest.mark.parametrize(
        "obj",
        [
            [],
            1,
            "hello",
            None,
            {},
            {"type": 1},
            {"type": "nope"},
            {"type": "join"},
            {"type": "join", "room": 5},
            {"type": "join", "room": "a b"},
            {"type": "join", "room": "r", "since": -1},
            {"type": "join", "room": "r", "since": True},
            {"type": "join", "room": "r", "since": "3"},
            {"type": "say", "room": "r"},
            {"type": "say", "room": "r", "text": ""},
            {"type": "say", "room": "r", "text": 5},
            {"type": "say", "room": "r", "text": "x", "id": 5},
            {"type": "dm", "text": "x"},
            {"type": "profile"},
            {"type": "profile", "nick": 3},
            {"type": "profile", "nick": "a", "info": []},
            {"type": "hello", "client": 7},
            {"type": "leave", "room": "x" * 33},
        ],
    )
    def test_bad_message(self, obj):
        """Wrong shapes, missing or mistyped fields, unknown types → bad_message."""
        assert code_of(json.dumps(obj)) == "bad_message"

    @pytest.mark.parametrize("nick", ["", "a" * 33, "a b", "é", "a!", "аlice"])
    def test_bad_nick(self, nick):
        """A string nick outside 1-32 [A-Za-z0-9_-] → bad_nick (look-alike Unicode included)."""
        assert code_of(json.dumps({"type": "profile", "nick": nick})) == "bad_nick"

    @pytest.mark.parametrize(
        "text",
        [
            '{"type":"say","room":"r","text":"\\ud800"}',
            '{"type":"say","room":"r","text":"ok","id":"\\udc00"}',
            '{"type":"dm","to":"b","text":"\\udfff"}',
            '{"type":"hello","client":"\\ud83d"}',
        ],
    )
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
        assert (
            codec.encode(codec.dm("a", "héllo", 1.5))
            == '{"type":"dm","from":"a","text":"héllo","ts":1.5}'.encode()
        )

    def test_bye_detail_only_when_given(self):
        """bye carries `message` only with a detail."""
        assert codec.bye("kicked") == {"type": "bye", "reason": "kicked"}
        assert codec.bye("kicked", "spam")["message"] == "spam"


class TestShapeBudget:
    """What a client may store (`profile.info`, `hello.client`) is checked before it is kept."""

    def profile(self, info, **shape):
        return codec.decode(
            json.dumps({"type": "profile", "nick": "a", "info": info}), codec.Shape(**shape)
        )

    def test_info_is_kept_as_compact_json_bytes(self):
        """Bytes, not a tree of Python objects: whatever its shape, it costs its length."""
        assert (
            self.profile({"lang": "fr", "tags": ["x", 1]}).info == b'{"lang":"fr","tags":["x",1]}'
        )
        assert self.profile({"emoji": "\U0001f600"}).info == '{"emoji":"\U0001f600"}'.encode()

    @pytest.mark.parametrize(
        "info,why",
        [
            ({"a": {"b": {"c": {"d": {}}}}}, "deeper than 4"),
            ({"k": "x" * 3000}, "longer than 512"),
            ({f"k{i}": i for i in range(65)}, "more than 64"),
            ({"l": list(range(70))}, "more than 64"),
            ({f"k{i}": "y" * 100 for i in range(30)}, "larger than 2048"),
        ],
    )
    def test_over_budget_is_bad_message(self, info, why):
        """Too deep, too long a string, too many keys or items, too many bytes → bad_message."""
        with pytest.raises(DecodeError, match=why) as exc:
            self.profile(info)
        assert exc.value.code == "bad_message"

    def test_depth_four_is_allowed(self):
        assert self.profile({"a": {"b": {"c": {}}}}).info == b'{"a":{"b":{"c":{}}}}'

    def test_budget_comes_from_the_shape(self):
        """--info-bytes and --info-depth reach the check."""
        with pytest.raises(DecodeError):
            self.profile({"a": "x" * 100}, max_bytes=64)
        with pytest.raises(DecodeError):
            self.profile({"a": {"b": 1}}, max_depth=1)

    def test_the_issue_probe_is_refused_before_decoding(self):
        """A 63 KB frame of empty `{}` is refused by its bracket count, before json.loads (a
        parser limit, like nesting too deep: bad_json)."""
        frame = '{"type":"profile","nick":"a","info":{"x":[' + ",".join(["{}"] * 21000) + "]}}"
        assert len(frame) > 60_000
        with pytest.raises(DecodeError, match="objects and arrays") as exc:
            codec.decode(frame)
        assert exc.value.code == "bad_json"

    def test_brackets_inside_strings_do_not_count(self):
        """A say full of `{` is still a say: only structure outside strings is counted."""
        text = "{[" * 5000 + '"\\" ]'
        assert codec.decode(json.dumps({"type": "say", "room": "r", "text": text})).text == text

    def test_hello_client_length(self):
        assert codec.decode(json.dumps({"type": "hello", "client": "c" * 128})).client == "c" * 128
        assert code_of(json.dumps({"type": "hello", "client": "c" * 129})) == "bad_message"


class TestExtensions:
    def test_history_request(self):
        assert codec.decode('{"type":"history","room":"r","before":10,"limit":5}') == codec.History(
            "r", 10, None, 5
        )
        for bad in (
            '{"type":"history"}',
            '{"type":"history","room":"r","before":-1}',
            '{"type":"history","room":"r","limit":0}',
        ):
            assert code_of(bad) == "bad_message"

    def test_ignore(self):
        assert codec.decode('{"type":"ignore","nick":"bob"}') == codec.Ignore("bob")
        assert code_of('{"type":"unignore","nick":"b b"}') == "bad_nick"

    def test_spliced_frames_are_json(self):
        """`joined` and `history` pages are spliced from kept bytes and stay valid JSON."""
        msgs = [codec.encode(codec.message("r", "a", "h\u00e9", i, 1.0)) for i in (1, 2)]
        j = json.loads(codec.encode_joined("r", ["a"], msgs, True, more=True))
        assert j == {
            "type": "joined",
            "room": "r",
            "members": ["a"],
            "complete": True,
            "more": True,
            "history": [json.loads(m) for m in msgs],
        }
        assert "more" not in json.loads(codec.encode_joined("r", [], [], False))
        h = json.loads(codec.encode_history("r", msgs[:1], False, True))
        assert h == {
            "type": "history",
            "room": "r",
            "messages": [json.loads(msgs[0])],
            "more": False,
            "complete": True,
        }
