"""The pure parts of the two shipped plugins: the bot's answers, the moderator's rules.

Time is passed in explicitly: a 10-second window is checked in microseconds.
"""

from __future__ import annotations

import pytest

from actors.plugins.bot import HELP, answer, format_duration
from actors.plugins.moderation import Rules, Verdict


class TestBotAnswers:
    """docs/extending.md, "The bot": !help, !who, !uptime."""

    def test_help(self):
        """!help lists the three commands."""
        assert answer("!help", "lobby", [], 0) == HELP
        assert all(cmd in HELP for cmd in ("!help", "!who", "!uptime"))

    def test_who_lists_the_members_of_the_room(self):
        """!who names the room and its members."""
        assert answer("!who", "lobby", ["alice", "bot"], 0) == "In lobby: alice, bot (2)"

    def test_who_in_a_dm_points_to_rooms(self):
        """!who has no room in a dm: it says where to ask."""
        assert "in a room" in answer("!who", None, [], 0)

    def test_uptime(self):
        """!uptime formats the node's age."""
        assert answer("!uptime", "lobby", [], 3725.9) == "Up 1h 2m 5s."

    @pytest.mark.parametrize("text", ["hello", "", "help", "say !help", "!helpme"])
    def test_anything_else_is_no_command(self, text):
        """Only a message starting with the command word is answered."""
        assert answer(text, "lobby", [], 0) is None

    def test_commands_are_case_insensitive_and_may_carry_words(self):
        """`!WHO please` is !who."""
        assert answer("!WHO please", "r", ["a"], 0) == "In r: a (1)"

    @pytest.mark.parametrize(
        "seconds, text", [(0, "0s"), (59.9, "59s"), (60, "1m 0s"), (86400 + 5, "1d 0h 0m 5s")]
    )
    def test_format_duration(self, seconds, text):
        """Leading zero units are left out, later ones kept."""
        assert format_duration(seconds) == text


class TestModerationRules:
    """docs/extending.md, "The moderator": N repeats in T seconds, banned words, warn first."""

    def test_the_same_message_n_times_within_t_is_a_violation(self):
        """The 3rd identical message within 10 s: a warning."""
        rules = Rules(repeat_limit=3, repeat_window=10.0)
        assert rules.judge("a", "hi", 0.0) is None
        assert rules.judge("a", "hi", 1.0) is None
        verdict = rules.judge("a", "hi", 2.0)
        assert verdict == Verdict("warn", "the same message 3 times in 10 s")

    def test_repeats_spread_over_more_than_t_are_fine(self):
        """Identical messages further apart than the window never add up."""
        rules = Rules(repeat_limit=3, repeat_window=10.0)
        assert all(rules.judge("a", "hi", t) is None for t in (0.0, 6.0, 12.0, 18.0, 24.0))

    def test_other_messages_in_between_do_not_reset_the_count(self):
        """hi, x, hi, y, hi within the window: 3 repeats of hi."""
        rules = Rules(repeat_limit=3, repeat_window=10.0)
        verdicts = [
            rules.judge("a", text, i) for i, text in enumerate(["hi", "x", "hi", "y", "hi"])
        ]
        assert verdicts[:4] == [None] * 4 and verdicts[4] is not None

    def test_repeats_are_counted_per_nick_and_ignore_case_and_spacing(self):
        """Two nicks saying the same thing are not one repeater; `Hi ` equals `hi`."""
        rules = Rules(repeat_limit=3, repeat_window=10.0)
        assert [rules.judge(n, "hi", 0.0) for n in ("a", "b", "a", "b")] == [None] * 4
        assert rules.judge("a", "  HI ", 1.0) is not None

    def test_warn_then_kick(self):
        """With warnings=1: the first violation warns, the second kicks, then the slate is clean."""
        rules = Rules(repeat_limit=2, repeat_window=10.0, warnings=1)
        rules.judge("a", "x", 0.0)
        assert rules.judge("a", "x", 0.1).action == "warn"
        assert rules.judge("a", "x", 0.2) is None  # counting starts afresh after a violation
        assert rules.judge("a", "x", 0.3).action == "kick"
        assert rules.strikes == {}

    def test_no_warnings_kicks_at_once(self):
        """warnings=0: the first violation kicks."""
        rules = Rules(banned_words=["spam"], warnings=0)
        assert rules.judge("a", "spam", 0.0).action == "kick"

    def test_banned_words_match_whole_words_in_any_case(self):
        """`SPAM!` is the banned word; `spammer` is not."""
        rules = Rules(banned_words=["spam"])
        assert rules.judge("a", "buy SPAM!", 0.0) == Verdict(
            "warn", "the word 'spam' is not allowed here"
        )
        assert rules.judge("b", "a spammer", 0.0) is None

    def test_a_forgiven_warning_is_forgotten(self):
        """forgive(nick) drops the warning: the next violation warns again."""
        rules = Rules(banned_words=["spam"])
        assert rules.judge("a", "spam", 0.0).action == "warn"
        rules.forgive("a")
        assert rules.judge("a", "spam", 1.0).action == "warn"
