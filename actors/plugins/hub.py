"""PluginHub: a node's plugins — starting them, and what happens when one fails.

One per ActorSystem (``system.plugins``).  It subscribes nothing itself: each plugin
subscribes to the node's observer port (``actors/core/observe.py``) when it starts and
unsubscribes when it stops.  Supervision is a policy with three outcomes:

* restart: fresh state, same settings, its timers re-armed with their deadlines (so a
  periodic job survives), its nick claimed again and its rooms rejoined (members see it
  leave and join again);
* give up: more than ``max_restarts`` failures within ``restart_window`` seconds, or a
  constructor that fails again: it stays stopped, and ``given_up`` (shown on the node in
  ``/debug``) keeps its last error;
* at start-up: an error for the caller, and nothing left in the tree.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import gevent

from ..base import HubbubActor, tell
from ..clock import Clock
from ..core.observe import Observers
from .actor import PluginActor, PluginReport, Start
from .registry import spec_of

__all__ = ["PluginHub"]

log = logging.getLogger("hubbub.plugins")


class PluginHub:
    """The node's side of plugins (``system.plugins``, also ``NodeActor.plugins``)."""

    def __init__(
        self,
        node: HubbubActor,
        scheduler: Any,
        directory: Any,
        clock: Clock,
        started: float,
        observers: Observers | None = None,
        shared_nicks: bool = False,
    ) -> None:
        self.node = node
        self.scheduler = scheduler
        """SchedulerActor ref: plugin timers go through the one shared scheduler."""
        self.directory = directory
        """DirectoryActor ref: nicks, rooms, dm, kick."""
        self.clock = clock
        self.started = started
        """Wall-clock time the node started (for uptime)."""
        self.observers = observers or Observers()
        """The node's observer port: plugins subscribe to rooms and users there."""
        self.shared_nicks = shared_nicks
        """True in a cluster: the same plugin on another node may hold the nick (not an error)."""
        self.given_up: dict[str, str] = {}
        """spec → last error, for plugins stopped after too many failures."""
        self.restarts: dict[str, int] = {}
        """spec → restarts so far (a fresh incarnation reads its count here as it is built)."""
        self._nicks: dict[str, str] = {}
        """plugin actor id → the nick the directory granted it (told by the plugin itself)."""
        self._specs: dict[str, tuple[type[PluginActor], dict[str, Any]]] = {}
        self._failures: dict[str, deque[float]] = {}

    @property
    def room_watchers(self) -> list[Any]:
        """Refs of the plugins that hear every room (the observer port's list)."""
        return self.observers.rooms

    @property
    def user_watchers(self) -> list[Any]:
        """Refs of the plugins that hear user lifecycles (the observer port's list)."""
        return self.observers.users

    def running(self) -> list[PluginActor]:
        return [a for a in list(self.node.children.values()) if isinstance(a, PluginActor)]

    def plugin_nicks(self) -> set[str]:
        """Nicks held by running plugins: each plugin records its own here when granted and
        removes it as it stops (in its own greenlet; no actor's fields are read)."""
        return set(self._nicks.values())

    def nick_granted(self, plugin_id: str, nick: str | None) -> None:
        """A plugin's nick changed (None: it holds none any more)."""
        if nick is None:
            self._nicks.pop(plugin_id, None)
        else:
            self._nicks[plugin_id] = nick

    def describe_given_up(self) -> str | None:
        """One line for the node's row in /debug: each plugin given up on, with its last error."""
        if not self.given_up:
            return None
        return "; ".join(f"{spec}: {error}" for spec, error in sorted(self.given_up.items()))

    def start(
        self,
        cls: type[PluginActor],
        settings: Mapping[str, Any] | None = None,
        spec: str | None = None,
        timeout: float | None = 5.0,
    ) -> PluginActor:
        """Start a plugin under the node.  With ``timeout`` (start-up) wait until it started and
        its nick was granted, and re-raise what its constructor or ``on_started`` raised, or
        NickTaken; nothing of it is left running then.  With None only tell it to start."""
        spec = spec or spec_of(cls)
        if spec in self._specs:
            raise ValueError(f"plugin {spec} is already running")
        settings = dict(settings or {})
        self.restarts.pop(spec, None)  # a new start, not a restart
        actor = self._spawn(cls, spec, settings)
        self.given_up.pop(spec, None)
        self._specs[spec] = (cls, settings)
        if timeout is None:
            tell(actor.actor_ref, Start())
            return actor
        try:
            # The edge asks, with a timeout (STYLE.md habit 5): start-up waits for the
            # plugin so that a broken one stops the server before it listens.
            ready = actor.actor_ref.ask(Start(startup=True), timeout=timeout)
            try:
                ready.get(timeout=timeout)  # the nick: granted, or NickTaken
            except gevent.Timeout:
                raise TimeoutError(f"no answer to its nick claim within {timeout:g} s") from None
        except BaseException:
            del self._specs[spec]
            actor.actor_ref.stop(block=False)  # its on_stop frees whatever it claimed
            raise
        return actor

    def _spawn(self, cls: type[PluginActor], spec: str, settings: dict[str, Any]) -> PluginActor:
        actor_id = f"plugin:{spec}"
        before = self.node.children.get(actor_id)
        try:
            actor: PluginActor = cls.spawn(self, spec, settings)
        except BaseException:
            # A constructor that raised after linking itself must not haunt /debug.
            if self.node.children.get(actor_id) is not before:
                del self.node.children[actor_id]
            raise
        return actor

    def child_failed(self, report: PluginReport, error: BaseException) -> None:
        """Supervision (the node calls this with what the plugin said as it failed)."""
        spec = report.spec
        if spec not in self._specs:
            return  # its start failed (or it was given up on): it is being stopped, not restarted
        cls, settings = self._specs[spec]
        now = self.clock.monotonic()
        recent = self._failures.setdefault(spec, deque())
        recent.append(now)
        while recent and recent[0] <= now - cls.restart_window:
            recent.popleft()
        if len(recent) > cls.max_restarts:
            self._give_up(spec, error)
            log.error(
                "plugin %s failed %d times in %g s: stopped, not restarted",
                spec,
                len(recent),
                cls.restart_window,
            )
            return
        self.restarts[spec] = self.restarts.get(spec, 0) + 1
        try:
            fresh = self._spawn(cls, spec, settings)
        except Exception as exc:  # noqa: BLE001 - a constructor failing now will fail again
            self._give_up(spec, exc)
            log.error("plugin %s could not be restarted: %r", spec, exc)
            return
        log.warning("plugin %s restarted (%d) after %r", spec, self.restarts[spec], error)
        tell(fresh.actor_ref, Start(report.timers))

    def _give_up(self, spec: str, error: BaseException) -> None:
        self.given_up[spec] = repr(error)
        del self._specs[spec]  # may be started again (by hand) later, counting from 0
        self.restarts.pop(spec, None)
