"""The inspector's pure parts (hubbub/inspect.py): queries, top-k pages, the streamed tree."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace
from typing import Any

import pytest

from hubbub.inspect import (
    USER_COLUMNS,
    QueryError,
    parse_list_query,
    percentile,
    stream_tree,
    top_page,
)


class Node:
    """An actor as the tree sees it: kind, id, mailbox, fields, children."""

    def __init__(self, actor_id: str, kind: str = "X", depth: int = 0, **fields: Any) -> None:
        self.actor_id, self.kind, self.fields = actor_id, kind, fields
        self.actor_inbox = SimpleNamespace(qsize=lambda: depth)
        self.children: dict[str, Node] = {}

    def add(self, child: Node) -> Node:
        self.children[child.actor_id] = child
        return child

    def describe_fields(self) -> dict[str, Any]:
        return dict(self.fields)

    def describe(self) -> dict[str, Any]:
        """The reference shape (actors/base.py HubbubActor.describe)."""
        return {
            "kind": self.kind,
            "id": self.actor_id,
            "mailbox": self.actor_inbox.qsize(),
            **self.describe_fields(),
            "children": [c.describe() for c in self.children.values()],
        }


def sample_tree() -> Node:
    root = Node("node", "NodeActor", uptime=1.5)
    root.add(Node("scheduler", "SchedulerActor", pending=3))
    directory = root.add(Node("directory", "DirectoryActor"))
    for r in range(5):
        directory.add(Node(f"room:r{r}", "RoomActor", room=f"r{r}", members=2))
    for u in range(300):
        root.add(
            Node(
                f"u{u}",
                "UserActor",
                depth=u % 7,
                state="InChat",
                nick=f"n{u}",
                rooms=["r1"],
                timers=[{"name": "ping", "due_in": 1.0}],
            )
        )
    return root


class TestStreamTree:
    """GET /debug/actors: the contract's tree, written in chunks."""

    def test_same_json_as_describe(self):
        """Joined, the chunks are exactly {"actors": root.describe()}; the walk paused between them."""
        root, pauses = sample_tree(), []
        chunks = list(stream_tree(root, pause=lambda: pauses.append(1), every=16))
        assert json.loads(b"".join(chunks)) == {"actors": root.describe()}
        assert len(chunks) > 10 and len(pauses) == len(chunks) - 1

    def test_every_actor_once(self):
        """Every actor of the tree appears exactly once."""
        seen: list[str] = []

        def walk(n: dict[str, Any]) -> None:
            seen.append(n["id"])
            for c in n["children"]:
                walk(c)

        walk(json.loads(b"".join(stream_tree(sample_tree(), pause=lambda: None)))["actors"])
        assert len(seen) == len(set(seen)) == 1 + 2 + 5 + 300

    def test_depth_cuts_with_a_count(self):
        """?depth=1: the root's children without theirs, and how many each has."""
        body = json.loads(b"".join(stream_tree(sample_tree(), depth=1, pause=lambda: None)))[
            "actors"
        ]
        directory = next(c for c in body["children"] if c["id"] == "directory")
        assert directory["children"] == [] and directory["more"] == 5
        assert len(body["children"]) == 302

    def test_leaf_root(self):
        """A tree of one actor is still a whole object."""
        assert (
            json.loads(b"".join(stream_tree(Node("node"), pause=lambda: None)))["actors"][
                "children"
            ]
            == []
        )


class TestTopPage:
    def test_matches_a_full_sort(self):
        """Any page of the top-k equals the same page of a full sort (ties broken by id)."""
        rng = random.Random(7)
        items = [(rng.randint(0, 20), f"id{i:04d}") for i in range(1000)]
        for desc in (False, True):
            full = sorted(items, key=lambda t: (t[0], t[1]), reverse=desc)
            for offset, limit in ((0, 10), (37, 25), (990, 50)):
                page, matched = top_page(items, lambda t: t[0], lambda t: t[1], offset, limit, desc)
                assert page == full[offset : offset + limit] and matched == 1000

    def test_filter_counts_matches(self):
        """`matched` counts what the filter kept, not what the page shows."""
        page, matched = top_page(
            range(100), lambda x: x, str, 0, 5, False, keep=lambda x: x % 3 == 0
        )
        assert page == [0, 3, 6, 9, 12] and matched == 34

    def test_actor_gone_midway_is_skipped(self):
        """An item whose key cannot be read (an actor half-way through stopping) is left out."""

        def key(x: int) -> int:
            if x == 3:
                raise AttributeError("stopped")
            return x

        assert top_page(range(6), key, str, 0, 10, False) == ([0, 1, 2, 4, 5], 5)


class TestQuery:
    def test_defaults_and_filters(self):
        q = parse_list_query("nick=al&state=InChat", USER_COLUMNS, "age", ("nick", "state", "room"))
        assert q == {
            "sort": "age",
            "order": "asc",
            "offset": 0,
            "limit": 50,
            "nick": "al",
            "state": "InChat",
            "room": "",
        }

    @pytest.mark.parametrize(
        "qs",
        [
            "sort=password",
            "order=up",
            "limit=0",
            "limit=201",
            "offset=-1",
            "offset=x",
            "offset=10001",
        ],
    )
    def test_bad_values_are_refused(self, qs):
        """Unknown columns and out-of-range pages are a 400, not a full scan."""
        with pytest.raises(QueryError):
            parse_list_query(qs, USER_COLUMNS, "age", ())


def test_percentile_with_zeros():
    """Nearest rank over a population that is mostly empty mailboxes."""
    assert percentile([], 0, 99) == 0
    assert percentile([1, 5, 9], 97, 50) == 0
    assert percentile([1, 5, 9], 97, 99) == 5 and percentile([1, 5, 9], 97, 100) == 9
