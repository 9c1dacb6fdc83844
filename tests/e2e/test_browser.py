"""The web client (`GET /`) and the debug view (`GET /debug`) in a real browser (issue 7).

Chromium driven by Playwright (tests/support/browser_driver.py) against the real server
process: pages chat with each other, see presence, survive a dropped connection
without missing a message, show why they were disconnected, and the debug page
follows users through their states. The last test takes the README's screenshots.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

import pytest

from ..support.browser_driver import PHONE, NetworkCut, chromium
from ..support.e2e import ROOT, Client, Server

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
expect = sync_api.expect
expect.set_options(timeout=5_000)

DESKTOP = {"width": 1200, "height": 720}
_n = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_n)}"


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def server():
    with Server() as srv:
        yield srv


@pytest.fixture
def window(browser):
    """``window(**options)``: a page in a browser profile of its own, closed after the test.

    One profile (context) per person, as in life, and not tabs of one window: Chromium
    stops animation frames in background tabs, and every click would wait for them.
    """
    contexts, errors = [], []

    def new_page(**options: Any) -> Any:
        ctx = browser.new_context(**{"viewport": DESKTOP, **options})
        ctx.set_default_timeout(5_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        return page

    yield new_page
    for ctx in contexts:  # closes the pages and their sockets
        ctx.close()
    assert not errors, "uncaught errors in the pages:\n" + "\n".join(errors)


# --- driving the chat page as a user would ------------------------------------------


def open_chat(window: Any, url: str, nick: str, *rooms: str, **options: Any) -> Any:
    page = window(**options)
    page.goto(url)
    page.get_by_role("textbox", name="Nickname").fill(nick)
    page.get_by_role("button", name="Enter chat").click()
    expect(page.locator("#me")).to_have_text(nick)
    expect(page.locator("#status")).to_have_text("online")
    for room in rooms:
        join(page, room)
    return page


def join(page: Any, room: str) -> None:
    page.get_by_label("Room to join").fill(room)
    page.get_by_label("Room to join").press("Enter")
    expect(page.locator("#conv-title")).to_have_text(f"# {room}")
    expect(page.locator(f'#rooms li[data-room="{room}"]')).not_to_have_class(re.compile("stale"))


def open_room(page: Any, room: str) -> None:
    page.locator(f'#rooms li[data-room="{room}"] button.open').click()
    expect(page.locator("#conv-title")).to_have_text(f"# {room}")


def say(page: Any, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")
    expect(mine(page, text)).to_have_attribute("data-status", "delivered")


def mine(page: Any, text: str) -> Any:
    return page.locator("#messages .msg.mine").filter(has_text=text)


def texts(page: Any) -> list[str]:
    """The texts of the messages shown in the open conversation, top to bottom."""
    return page.locator("#messages .msg .text").all_inner_texts()


def members(page: Any) -> Any:
    return page.locator("#members li")


def banner(page: Any) -> Any:
    return page.locator("#banner")


# --- the chat page --------------------------------------------------------------------


class TestChat:
    """Two pages chat with each other (issue 7, "Web chat client")."""

    def test_two_pages_chat(self, window, server):
        """Each page shows the other's message with its sender and time; its own is acknowledged."""
        room, a_nick, b_nick = unique("talk"), unique("alice"), unique("bob")
        a = open_chat(window, server.url, a_nick, room)
        b = open_chat(window, server.url, b_nick, room)
        say(a, "hi bob")
        msg = b.locator("#messages .msg").filter(has_text="hi bob")
        expect(msg.locator(".from")).to_have_text(a_nick)
        expect(msg.locator("time")).to_have_text(re.compile(r"\d{1,2}:\d{2}"))
        say(b, "hello alice")
        expect(
            a.locator("#messages .msg").filter(has_text="hello alice").locator(".from")
        ).to_have_text(b_nick)
        assert texts(a) == texts(b) == ["hi bob", "hello alice"]

    def test_presence_updates_members(self, window, server):
        """Joining and leaving show in the other page's timeline and members list."""
        room, a_nick, b_nick = unique("pres"), unique("alice"), unique("bob")
        a = open_chat(window, server.url, a_nick, room)
        expect(members(a)).to_have_count(1)
        b = open_chat(window, server.url, b_nick, room)
        expect(a.locator(f'#messages .info[data-event=join][data-user="{b_nick}"]')).to_have_text(
            f"{b_nick} joined"
        )
        expect(members(a)).to_have_count(2)
        expect(a.locator(f'#members li[data-nick="{b_nick}"]')).to_be_visible()
        expect(a.locator("#conv-sub")).to_have_text("2 members")
        b.get_by_role("button", name=f"Leave room {room}").click()
        expect(b.locator(f'#rooms li[data-room="{room}"]')).to_have_count(0)
        expect(a.locator(f'#messages .info[data-event=leave][data-user="{b_nick}"]')).to_have_text(
            f"{b_nick} left"
        )
        expect(members(a)).to_have_count(1)

    def test_unread_marks_and_dms(self, window, server):
        """A message in a room not on screen marks it unread; a dm opens a conversation."""
        r1, r2, a_nick, b_nick = unique("one"), unique("two"), unique("alice"), unique("bob")
        a = open_chat(window, server.url, a_nick, r1, r2)
        b = open_chat(window, server.url, b_nick, r1, r2)
        open_room(a, r1)
        say(b, "over here")  # b's open room is r2
        badge = a.locator(f'#rooms li[data-room="{r2}"] .unread')
        expect(badge).to_have_text("1")
        expect(a).to_have_title(re.compile(r"^\(1\) "))
        open_room(a, r2)
        expect(badge).to_have_count(0)
        assert texts(a) == ["over here"]
        # a direct message: click the member, write
        a.locator(f'#members li[data-nick="{b_nick}"] button').click()
        expect(a.locator("#conv-title")).to_have_text(f"@ {b_nick}")
        say(a, "psst")
        dm = b.locator(f'#dms li[data-dm="{a_nick}"]')
        expect(dm.locator(".unread")).to_have_text("1")
        dm.locator("button.open").click()
        expect(b.locator("#messages .msg").filter(has_text="psst").locator(".from")).to_have_text(
            a_nick
        )

    def test_phone_width(self, window, server):
        """At phone width nothing scrolls sideways; rooms and members open as drawers."""
        phone = {"viewport": PHONE, "is_mobile": True, "has_touch": True}
        page = open_chat(window, server.url, unique("phone"), unique("small"), **phone)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width == [PHONE["width"]] * 2, width  # no zoomed-out layout viewport
        sidebar = page.locator("#sidebar")
        expect(sidebar).not_to_be_in_viewport()
        page.get_by_role("button", name="Rooms").tap()
        expect(sidebar).to_be_in_viewport(ratio=0.99)
        expect(page.get_by_role("button", name="Rooms")).to_have_attribute("aria-expanded", "true")
        page.locator("#scrim").tap(
            position={"x": PHONE["width"] - 20, "y": 300}
        )  # beside the drawer
        expect(sidebar).not_to_be_in_viewport()
        page.get_by_role("button", name="Members").tap()
        expect(page.locator("#people")).to_be_in_viewport(ratio=0.99)
        expect(page.locator("#members li")).to_have_count(1)

    def test_taken_nick_is_explained(self, window, server):
        """A nick already in use: the form stays open and says so."""
        nick = unique("dup")
        with Client(server) as c:
            c.login(nick)
            page = window()
            page.goto(server.url)
            page.get_by_role("textbox", name="Nickname").fill(nick)
            page.get_by_role("button", name="Enter chat").click()
            expect(page.locator("#nick-error")).to_have_text(re.compile("taken"))
            expect(page.get_by_role("textbox", name="Nickname")).to_have_attribute(
                "aria-invalid", "true"
            )


class TestFirstSteps:
    """The client's rough edges found trying it as a new user (issue 14, item 6)."""

    def test_status_waits_for_the_nickname(self, window, server):
        """While the nickname dialog is open the chip does not say "online"."""
        page = window()
        page.goto(server.url)
        expect(page.get_by_role("textbox", name="Nickname")).to_be_visible()
        expect(page.locator("#status")).to_have_text("choose a nickname")
        page.get_by_role("textbox", name="Nickname").fill(unique("newbie"))
        page.get_by_role("button", name="Enter chat").click()
        expect(page.locator("#status")).to_have_text("online")

    def test_rooms_are_suggested_after_login(self, window, server):
        """After login: lobby and the rooms that exist, one click to join."""
        busy = unique("busy")
        with Client(server) as c:
            c.login(unique("host"), busy)
            page = open_chat(window, server.url, unique("guest"))
            suggest = page.get_by_role("button", name=f"Join room {busy}")
            expect(page.get_by_role("button", name="Join room lobby")).to_be_visible()
            expect(suggest).to_be_visible()
            suggest.click()
            expect(page.locator("#conv-title")).to_have_text(f"# {busy}")
            expect(members(page)).to_have_count(2)

    def test_members_go_grey_after_a_kick(self, window, server):
        """Kicked: the member list is marked as last known (no green dots), the header says offline."""
        room, nick = unique("greyed"), unique("kicked")
        page = open_chat(window, server.url, nick, room)
        dot = page.locator("#members li .dot").first
        green = dot.evaluate("e => getComputedStyle(e, '::after').backgroundColor")
        assert server.http("/admin/kick", "POST", {"nick": nick, "reason": "test"})[0] == 200
        expect(page.locator("#status")).to_have_text("offline")
        expect(page.locator("#members")).to_have_class(re.compile("stale"))
        expect(page.locator("#members-note")).to_contain_text("not in")
        assert dot.evaluate("e => getComputedStyle(e, '::after').backgroundColor") != green
        expect(page.locator("#conv-sub")).to_have_text("offline")

    def test_phone_shows_own_nick_and_rooms_to_join(self, window, server):
        """At phone width the own nick is in the header and rooms can be joined without the drawer."""
        nick = unique("pnick")
        phone = {"viewport": PHONE, "is_mobile": True, "has_touch": True}
        page = open_chat(window, server.url, nick, **phone)
        expect(page.locator("#me")).to_be_visible()
        expect(page.get_by_role("button", name="Join room lobby")).to_be_in_viewport()
        page.get_by_role("button", name="Another room…").tap()
        expect(page.locator("#sidebar")).to_be_in_viewport(ratio=0.99)
        expect(page.get_by_label("Room to join")).to_be_focused()


class TestDisconnects:
    """Reconnect with backoff and `since`; a banner for each disconnect reason."""

    def test_reconnect_recovers_missed_messages(self, window, server):
        """The page's socket dies; the others talk on; it reconnects by itself, rejoins with
        `since` and shows what it missed, once and in order."""
        cut = NetworkCut(server.host, server.port)
        try:
            room, a_nick, b_nick = unique("flaky"), unique("alice"), unique("bob")
            a = open_chat(window, cut.url, a_nick, room)  # through the proxy
            b = open_chat(window, server.url, b_nick, room)
            say(b, "before")
            expect(a.locator("#messages .msg")).to_have_count(1)

            cut.cut()
            expect(a.locator("#status")).to_have_text("offline")
            expect(banner(a)).to_have_attribute("data-mode", "retry")
            expect(a.locator("#banner-text")).to_have_text(
                re.compile("Connection lost|Could not connect")
            )
            expect(
                b.locator(f'#messages .info[data-event=leave][data-user="{a_nick}"]')
            ).to_be_attached()
            say(b, "missed one")
            say(b, "missed two")

            cut.restore()  # no click: the page retries on its own
            expect(a.locator("#status")).to_have_text("online", timeout=15_000)
            expect(a.locator("#messages .msg")).to_have_count(3)
            assert texts(a) == ["before", "missed one", "missed two"]
            expect(banner(a)).to_have_attribute("data-mode", "ok")  # "… reconnected."
            expect(
                b.locator(f'#messages .info[data-event=join][data-user="{a_nick}"]')
            ).to_be_attached()
            say(a, "back")
            expect(b.locator("#messages .msg").filter(has_text="back")).to_be_visible()
        finally:
            cut.stop()

    def test_kick_banner(self, window, server):
        """/admin/kick → a banner with the reason, no automatic reconnect; Reconnect brings the
        page back with its nick and rooms."""
        room, nick = unique("kick"), unique("rowdy")
        page = open_chat(window, server.url, nick, room)
        status, _h, _body = server.http(
            "/admin/kick", "POST", {"nick": nick, "reason": "spamming the lobby"}
        )
        assert status == 200
        expect(page.locator("#banner-text")).to_have_text("Kicked: spamming the lobby")
        expect(banner(page)).to_have_attribute("data-code", "4005")
        expect(page.locator("#status")).to_have_text("offline")
        expect(page.get_by_role("button", name="Reconnect", exact=True)).to_be_visible()
        expect(page.locator("#retry-now")).to_be_hidden()  # kicked: no retry timer
        page.get_by_role("button", name="Reconnect", exact=True).click()
        expect(page.locator("#status")).to_have_text("online")
        expect(page.locator("#me")).to_have_text(nick)
        expect(page.locator(f'#rooms li[data-room="{room}"]')).not_to_have_class(
            re.compile("stale")
        )

    def test_shutdown_banner(self, window):
        """SIGTERM: `bye shutdown` and 1001 → "The server is restarting", and the page keeps
        trying to come back."""
        srv = Server()
        try:
            page = open_chat(window, srv.url, unique("stayer"), "lobby")
        finally:
            assert srv.stop() == 0, srv.stderr
        # the timeline keeps the reason; the banner moves on to the failed retries
        expect(page.locator("#messages .info.error")).to_have_text("The server is restarting")
        expect(banner(page)).to_have_attribute("data-mode", "retry")
        expect(page.get_by_role("button", name="Reconnect now")).to_be_visible()

    def test_profile_timeout_banner(self, window):
        """No nick chosen in time → 4004 and the contract's reason in words, not a number."""
        with Server("--profile-timeout", "0.5") as srv:
            page = window()
            page.goto(srv.url)
            expect(page.locator("#banner-text")).to_have_text(
                "You were idle too long without choosing a nickname"
            )
            expect(banner(page)).to_have_attribute("data-code", "4004")
            expect(page.locator("#retry-now")).to_be_hidden()


# --- the debug page (the inspector) ---------------------------------------------------------


def stat(page: Any, label: str) -> Any:
    return page.locator(f'#summary [data-stat="{label}"]')


def user_rows(page: Any) -> Any:
    return page.locator("#users-table tbody tr[data-id]")


class TestInspector:
    """The inspector at /debug (issue 14): summary, sorted paged lists, filters, drill-down,
    the tree by level."""

    def test_summary_and_sorted_paged_list(self, window, server):
        """The summary counts users per state; the users list sorts on a column, pages, and filters."""
        prefix = unique("pg")
        clients = [
            Client(server).login(f"{prefix}x{i:02d}", unique("pgroom") if i % 2 else "pgshared")
            for i in range(12)
        ]
        try:
            debug = window()
            debug.goto(server.url + "/debug?every=0.25")
            expect(stat(debug, "InChat")).to_have_attribute(
                "data-value", re.compile(r"^(1[2-9]|[2-9]\d|\d{3,})$")
            )
            expect(stat(debug, "≤ 1 s")).to_be_visible()  # the timer histogram
            debug.get_by_label("Filter by nick").fill(prefix)
            debug.get_by_label("Users per page").select_option("10")
            expect(user_rows(debug)).to_have_count(10)
            expect(debug.locator("#users-range")).to_have_text("1–10 of 12")
            debug.locator('#users-table th[data-sort="nick"] button').click()
            expect(debug.locator('#users-table th[data-sort="nick"]')).to_have_attribute(
                "aria-sort", "ascending"
            )
            expect(user_rows(debug).first).to_have_attribute("data-nick", f"{prefix}x00")
            debug.locator('#users-table th[data-sort="nick"] button').click()
            expect(user_rows(debug).first).to_have_attribute("data-nick", f"{prefix}x11")
            debug.locator("#tab-users").get_by_role("button", name="Next", exact=True).click()
            expect(debug.locator("#users-range")).to_have_text("11–12 of 12")
            expect(user_rows(debug)).to_have_count(2)
            expect(user_rows(debug).first).to_have_attribute("data-nick", f"{prefix}x01")
            # filter by room: the six in the shared room
            debug.get_by_label("Filter by room").fill("pgshared")
            expect(user_rows(debug)).to_have_count(6)
            debug.get_by_label("Filter by state").select_option("Connected")
            expect(debug.locator("#users-table tbody .empty")).to_have_text("No user matches.")
        finally:
            for c in clients:
                c.close()

    def test_drill_down_shows_a_real_timeout(self, window):
        """A user that never answers pings: its page shows the timers counting down, then the
        timeline of its pong timeout, ToBeDisconnected and close 4002, still readable once gone."""
        with Server("--ping-interval", "0.5", "--pong-timeout", "2.5") as srv:
            c = Client(srv, answer_pings=False)
            c.login("sleepy", "naps")
            debug = window()
            debug.goto(srv.url + f"/debug?every=0.25#actor/{c.session}")
            expect(debug.locator("#d-title")).to_have_text("User sleepy")
            expect(debug.locator("#d-state")).to_have_text("InChat")
            pong = debug.locator("#d-timers [data-timer=pong]")
            expect(pong).to_be_visible()
            first = float(pong.get_attribute("data-left"))
            expect(pong).not_to_have_attribute("data-left", f"{first:.1f}")  # counting down
            expect(debug.locator("#d-timers-wrap .legend")).to_contain_text("counts down")
            expect(debug.locator("#detail")).to_have_attribute("data-gone", "true", timeout=10_000)
            expect(debug.locator("#d-reason")).to_have_text("pong_timeout")
            fired = debug.locator('#timeline tr[data-event="TimerFired(pong)"]')
            expect(fired).to_have_attribute("data-to", "ToBeDisconnected")
            expect(fired).to_contain_text("close 4002")
            expect(debug.locator('#timeline tr[data-event="hello"]')).to_have_count(1)
            assert c.closed()[0] == 4002
            # the same answer from the list of recently gone users, by nick
            debug.get_by_role("button", name="Close").click()
            debug.locator('nav.tabs a[data-tab="gone"]').click()
            debug.get_by_label("Find a gone user").fill("sleepy")
            row = debug.locator("#gone-table tbody tr[data-reason=pong_timeout]")
            expect(row).to_have_count(1)
            row.get_by_role("link", name="sleepy").click()
            expect(debug.locator("#d-reason")).to_have_text("pong_timeout")

    def test_tree_level_by_level(self, window, server):
        """The tree opens at the node; the directory expands to its rooms on demand."""
        room = unique("treeroom")
        with Client(server) as c:
            c.login(unique("tree"), room)
            debug = window()
            debug.goto(server.url + "/debug#tree")
            node = debug.locator('#tree li[data-kind="NodeActor"]')
            expect(node).to_have_count(1)
            directory = debug.locator('#tree li[data-id="directory"]')
            expect(directory).to_have_attribute("aria-expanded", "false")
            expect(debug.locator(f'#tree li[data-id="room:{room}"]')).to_have_count(
                0
            )  # not loaded yet
            directory.get_by_role("button", name="Expand DirectoryActor directory").click()
            expect(debug.locator(f'#tree li[data-id="room:{room}"]')).to_have_count(1)
            debug.locator(f'#tree li[data-id="room:{room}"] a.actor').click()
            expect(debug.locator("#d-title")).to_have_text(f"Room #{room}")

    def test_phone_width(self, window, server):
        """At phone width the summary stacks and the page does not scroll sideways (the
        users table scrolls inside its card)."""
        with Client(server) as c:
            c.login(unique("narrow"), unique("narrowroom"))
            page = window(viewport=PHONE, is_mobile=True, has_touch=True)
            page.goto(server.url + "/debug")
            expect(stat(page, "users")).to_be_visible()
            expect(user_rows(page).first).to_be_attached()
            width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width == [PHONE["width"]] * 2, width

    def test_admin_token_prompted_once(self, window):
        """With --admin-token the page asks once and keeps the token for the session."""
        with Server("--admin-token", "s3cret") as srv:
            prompts: list[str] = []

            def answer(dialog: Any) -> None:
                prompts.append(dialog.message)
                dialog.accept("s3cret")

            page = window()
            page.on("dialog", answer)
            page.goto(srv.url + "/debug")
            expect(page.locator("#conn")).to_have_text("live")
            expect(stat(page, "users")).to_be_visible()
            page.reload()
            expect(page.locator("#conn")).to_have_text("live")
            assert len(prompts) == 1 and "token" in prompts[0]


class TestContentSecurityPolicy:
    """Issue 15 "HTTP edges": the shipped pages satisfy their own Content-Security-Policy,
    and the policy is live (an injected inline script does not run)."""

    WATCH = """window.__csp = [];
    document.addEventListener('securitypolicyviolation',
        e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""

    def test_pages_run_under_their_policy(self, window, server):
        """Chat (login, join, say) and the debug page work with no CSP violation reported."""
        console: list[str] = []
        room, nick = unique("csp"), unique("csp")
        page = window()
        page.add_init_script(self.WATCH)
        page.on("console", lambda m: console.append(m.text))
        page.goto(server.url)
        page.get_by_role("textbox", name="Nickname").fill(nick)
        page.get_by_role("button", name="Enter chat").click()
        expect(page.locator("#status")).to_have_text("online")
        join(page, room)
        say(page, "under a policy")
        debug = window()
        debug.add_init_script(self.WATCH)
        debug.on("console", lambda m: console.append(m.text))
        debug.goto(server.url + "/debug?every=0.25")
        expect(debug.locator(f'#users-table tbody tr[data-nick="{nick}"]')).to_have_attribute(
            "data-state", "InChat"
        )
        assert page.evaluate("window.__csp") == [] and debug.evaluate("window.__csp") == []
        assert not [m for m in console if "Content Security Policy" in m], console

    def test_injected_script_is_blocked(self, window, server):
        """A script injected into the page (as an XSS would) is refused by the policy."""
        page = window()
        page.add_init_script(self.WATCH)
        page.goto(server.url)
        page.evaluate("""() => { const s = document.createElement('script');
            s.textContent = 'window.__injected = 1'; document.body.appendChild(s); }""")
        expect(page.locator("body")).to_be_attached()
        page.wait_for_function("window.__csp.length > 0")
        assert page.evaluate("window.__injected") is None
        assert page.evaluate("window.__csp")[0].startswith("script-src")


# --- screenshots for the README -------------------------------------------------------


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/img when asked (HUBBUB_SCREENSHOTS=1) or when a picture is missing, else a temp dir:
    the pictures show live times and ids, so rewriting them on every run would dirty the tree."""
    img = ROOT / "docs" / "img"
    names = ("chat.png", "chat-mobile.png", "debug.png", "debug-timeline.png")
    if os.environ.get("HUBBUB_SCREENSHOTS") == "1" or not all((img / n).exists() for n in names):
        img.mkdir(parents=True, exist_ok=True)
        return img
    return tmp_path


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def shout(client: Client, room: str, text: str) -> None:
    """say, reading past whatever else arrives (presence, the echo) up to the ack."""
    client.send({"type": "say", "room": room, "text": text, "id": "s"})
    while client.recv()["type"] != "ack":
        pass


def test_screenshots(window, tmp_path):
    """A small conversation, photographed: chat (desktop and phone width) and the debug page."""
    out = screenshot_dir(tmp_path)
    phone = {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    with Server() as srv, Client(srv) as carol:
        carol.login("carol", "lobby", "random")
        shout(carol, "lobby", "Morning! Has anyone tried the new /debug page?")
        alice = open_chat(window, srv.url, "alice", "random", "lobby", color_scheme="light")
        bob = open_chat(window, srv.url, "bob", "random", "lobby", color_scheme="light", **phone)
        say(bob, "Yes: it draws every actor live, timers counting down")
        say(alice, "Nice. I can watch my own ping timer tick")
        shout(carol, "lobby", "and kicks show up as a banner in the page")
        shout(carol, "random", "lunch at noon?")
        carol.send({"type": "dm", "to": "alice", "text": "got a minute?"})
        expect(alice.locator("#dms li[data-dm=carol] .unread")).to_have_text("1")
        expect(alice.locator("#rooms li[data-room=random] .unread")).to_have_text("1")
        expect(alice.locator("#messages .msg")).to_have_count(4)
        expect(bob.locator("#messages .msg")).to_have_count(4)
        expect(bob.locator("#rooms-unread")).to_have_text("1")  # the room list is off-screen
        alice.get_by_label("Message", exact=True).fill("Sounds good — ")
        bob.get_by_label("Message", exact=True).fill("brb")
        for page in (alice, bob):  # the focus ring is for keyboards, not for pictures
            page.evaluate("document.activeElement.blur()")
        alice.screenshot(path=str(out / "chat.png"))
        bob.screenshot(path=str(out / "chat-mobile.png"))

        with Client(srv):  # one user still in Undefined, for the colours
            debug = window(viewport={"width": 1200, "height": 760}, color_scheme="light")
            debug.goto(srv.url + "/debug")
            expect(stat(debug, "Undefined")).to_have_attribute("data-value", "1")
            expect(user_rows(debug)).to_have_count(4)
            debug.screenshot(path=str(out / "debug.png"))
    # the drill-down of a user dropped by the pong rule
    with Server("--ping-interval", "0.5", "--pong-timeout", "2") as srv:
        c = Client(srv, answer_pings=False)
        c.login("dave", "lobby")
        debug = window(viewport={"width": 1200, "height": 760}, color_scheme="light")
        debug.goto(srv.url + f"/debug#actor/{c.session}")
        expect(debug.locator("#detail")).to_have_attribute("data-gone", "true", timeout=10_000)
        debug.locator("#detail").scroll_into_view_if_needed()
        debug.locator("#detail").screenshot(path=str(out / "debug-timeline.png"))
        c.close()
    assert png_size(out / "chat.png") == (1200, 720)
    assert png_size(out / "chat-mobile.png") == (PHONE["width"] * 2, PHONE["height"] * 2)
    assert png_size(out / "debug.png") == (1200, 760)
    assert png_size(out / "debug-timeline.png")[0] > 600
