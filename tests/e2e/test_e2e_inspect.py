"""The inspector's JSON endpoints (docs/operations.md "Inspecting a node"), on a real server."""

from __future__ import annotations

import json

import pytest

from ..support.e2e import Client, Server, walk

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server():
    # Short pings and a short pong rule: a client that does not answer is dropped in ~1 s.
    with Server("--ping-interval", "0.3", "--pong-timeout", "1") as srv:
        yield srv


def test_summary_counts_users_per_state(server):
    """/debug/summary: users per state (kept incrementally), rooms, timers due, mailboxes, rates."""
    with Client(server) as a, Client(server) as b, Client(server):
        a.login("sum_a", "sumroom")
        b.hello()
        s = server.wait_for(
            lambda: (s := server.json("/debug/summary"))["users"] >= 3 and s, what="3 users"
        )
        assert s["users_by_state"]["InChat"] >= 1 and s["users_by_state"]["Connected"] >= 1
        assert s["users_by_state"]["Undefined"] >= 1
        assert s["rooms"] >= 1 and s["actors"] >= 3 + 3  # node, scheduler, directory + users
        t = s["timers"]
        assert t["pending"] >= t["due_60s"] >= t["due_10s"] >= t["due_1s"] >= 1  # pings every 0.3 s
        assert set(s["mailbox"]) >= {"p50", "p90", "p99", "max", "deepest"}
        assert set(s["rates"]) == {"in_per_s", "out_per_s", "over_s"}


def test_users_sorted_filtered_paged(server):
    """/debug/users: sorted by any column on the server, filtered, one page at a time."""
    clients = [Client(server).login(f"pg{i:02d}", "pgroom" if i % 2 else "other") for i in range(6)]
    try:
        page = server.json("/debug/users?sort=nick&order=desc&limit=2&nick=pg")
        assert page["matched"] == 6 and [u["nick"] for u in page["items"]] == ["pg05", "pg04"]
        page2 = server.json("/debug/users?sort=nick&order=desc&limit=2&offset=2&nick=pg")
        assert [u["nick"] for u in page2["items"]] == ["pg03", "pg02"]
        inroom = server.json("/debug/users?room=pgroom&sort=nick")
        assert [u["nick"] for u in inroom["items"]] == ["pg01", "pg03", "pg05"]
        row = inroom["items"][0]
        assert (
            row["state"] == "InChat" and row["rooms"] == ["pgroom"] and row["remote"] == "127.0.0.1"
        )
        assert row["next"]["name"] in ("ping", "pong", "session") and row["backlog"] == 0
        assert server.json("/debug/users?state=Undefined&nick=pg")["matched"] == 0
        assert server.http("/debug/users?sort=secret")[0] == 400
        # the default view (by age, no filter) is read in connection order, without a scan:
        # the same answer as the scan a filter forces
        every_state = "state=Undefined,Connected,InChat,ToBeDisconnected,Disconnected"
        for order in ("asc", "desc"):
            fast = server.json(f"/debug/users?sort=age&order={order}&limit=4&offset=1")
            scan = server.json(
                f"/debug/users?sort=age&order={order}&limit=4&offset=1&{every_state}"
            )
            assert [u["id"] for u in fast["items"]] == [u["id"] for u in scan["items"]]
            assert fast["matched"] == scan["matched"]
        newest = server.json("/debug/users?sort=age&limit=1")["items"][0]
        assert newest["nick"] == "pg05"
        rooms = server.json("/debug/rooms?name=pgroom")
        assert rooms["items"][0]["room"] == "pgroom" and rooms["items"][0]["members"] == 3
    finally:
        for c in clients:
            c.close()


def test_drill_down_and_timeline_of_a_timeout(server):
    """/debug/actors/<id>: a live user's timers and timeline; after a pong timeout the same URL
    (by session id or by nick) tells why it was dropped."""
    c = Client(server, answer_pings=False)
    c.login("silent", "quiet")
    live = server.json(f"/debug/actors/{c.session}")
    assert live["gone"] is False and live["state"] == "InChat" and live["rooms"] == ["quiet"]
    assert {t["name"] for t in live["timers"]} >= {"ping", "pong", "session"}
    assert [e["event"] for e in live["timeline"]][:3] == ["Opened", "hello", "profile silent"]
    by_nick = server.json("/debug/actors/silent")
    assert by_nick["id"] == c.session
    assert c.closed()[0] == 4002
    gone = server.wait_for(
        lambda: (g := server.json(f"/debug/actors/{c.session}"))["gone"] and g, what="gone"
    )
    assert gone["reason"] == "pong_timeout" and gone["nick"] == "silent"
    fired = next(e for e in gone["timeline"] if e["event"] == "TimerFired(pong)")
    assert (fired["from"], fired["to"]) == ("InChat", "ToBeDisconnected") and "close 4002" in fired[
        "outcome"
    ]
    assert server.json("/debug/actors/silent")["id"] == c.session
    found = server.json("/debug/gone?nick=silent")["items"]
    assert found[0]["id"] == c.session and found[0]["reason"] == "pong_timeout"
    assert server.json("/debug/summary")["disconnects_last_minute"].get("pong_timeout", 0) >= 1
    assert server.http("/debug/actors/nobody-at-all")[0] == 404


def test_room_detail(server):
    """A room's page: members, seq, history size and its recent fan-out times."""
    with Client(server) as a, Client(server) as b:
        a.login("rd_a", "detailroom")
        b.login("rd_b", "detailroom")
        a.expect("presence", nick="rd_b")
        a.say("detailroom", "one")
        room = server.json("/debug/actors/room:detailroom")
        assert room["members"] == 2 and {m["nick"] for m in room["member_list"]} == {"rd_a", "rd_b"}
        assert room["seq"] == 1 and room["history"] == 1
        assert room["fanouts"][0]["members"] == 2 and room["fanouts"][0]["ms"] >= 0


def test_tree_level_by_level_and_streamed_whole(server):
    """/debug/tree pages one actor's children; /debug/actors streams the whole tree, every actor once."""
    with Client(server) as a:
        a.login("tree_a", "treeroom")
        top = server.json("/debug/tree")
        assert top["node"]["kind"] == "NodeActor" and top["total"] == top["node"]["children_count"]
        directory = server.json("/debug/tree?id=directory&limit=1")
        assert directory["total"] >= 1 and len(directory["children"]) == 1
        assert directory["children"][0]["kind"] == "RoomActor"
        status, headers, body = server.http("/debug/actors")
        assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
        ids = [n["id"] for n in walk(json.loads(body)["actors"])]
        assert len(ids) == len(set(ids)) and a.session in ids
        shallow = server.json("/debug/actors?depth=1")["actors"]
        assert all(c["children"] == [] for c in shallow["children"])
        assert next(c for c in shallow["children"] if c["id"] == "directory")["more"] >= 1


def test_public_room_names(server):
    """/rooms: names and member counts of the biggest rooms, for the chat page; no token needed."""
    with Client(server) as a:
        a.login("pub_a", "publicroom")
        body = server.json("/rooms")
        assert body["suggested"] == "lobby"
        assert {"room": "publicroom", "members": 1} in body["rooms"] or server.wait_for(
            lambda: {"room": "publicroom", "members": 1} in server.json("/rooms")["rooms"],
            what="room listed",
        )


def test_endpoints_follow_the_admin_rule():
    """Every new /debug endpoint answers 401 without the token when one is set; /rooms stays public."""
    with Server("--admin-token", "s3cret") as srv:
        for path in (
            "/debug/summary",
            "/debug/users",
            "/debug/rooms",
            "/debug/tree",
            "/debug/gone",
            "/debug/actors/node",
        ):
            assert srv.http(path)[0] == 401, path
            assert srv.http(path, headers={"Authorization": "Bearer s3cret"})[0] == 200, path
        assert srv.http("/rooms")[0] == 200


def test_metrics_read_the_incremental_counts(server):
    """/metrics reports users by state from the same counts as the summary."""
    with Client(server) as a:
        a.login("met_a")
        text = server.wait_for(
            lambda: (
                (t := server.http("/metrics")[2].decode())
                and 'hubbub_users{state="InChat"} 0.0' not in t
                and t
            ),
            what="InChat user",
        )
        assert "hubbub_mailbox_max" in text and "hubbub_actors" in text


def test_a_failed_user_leaves_the_counts_with_its_reason():
    """A UserActor that raises: out of the users-per-state count, its timeline kept with
    reason internal_error (tests/support/fault_server.py injects the failure)."""
    srv = Server(script="tests/support/fault_server.py")
    srv.expect_tracebacks = True
    with srv, Client(srv) as a:
        a.login("boom", "room")
        sid = a.session
        a.send({"type": "say", "room": "room", "text": "__boom_user__"})
        assert a.closed()[0] == 1011
        srv.wait_for(lambda: srv.json("/debug/summary")["users"] == 0, what="no users counted")
        gone = srv.json(f"/debug/actors/{sid}")
        assert gone["gone"] and gone["reason"] == "internal_error"
        assert srv.json("/debug/summary")["disconnects_last_minute"] == {"internal_error": 1}
