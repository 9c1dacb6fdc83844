"""The core's observer port: what rooms and users publish, and who listens.

Rooms and users know nothing about plugins.  They publish events to the subscriber
lists of one :class:`Observers` object, which the node creates and hands to them;
whatever wants to listen (the plugin API, ``actors/plugins/``) subscribes there.
With nobody subscribed the lists are empty and a room or user builds no event at
all: ``if self.watchers:`` is the whole cost.

The events themselves are typed messages (``actors/core/messages.py``), re-exported
here as the port's vocabulary.  The lists hold whatever the shell delivers to (actor
refs); telling them is the shell's job (``actors.base.publish``), not the core's.
"""

from __future__ import annotations

from typing import Any

from .messages import RoomMessage, RoomPresence, UserConnected, UserDisconnected, UserProfiled

__all__ = [
    "Observers",
    "RoomMessage",
    "RoomPresence",
    "UserConnected",
    "UserDisconnected",
    "UserProfiled",
]


class Observers:
    """The two subscriber lists of a node, shared by reference with every room and user.

    A subscriber is added and removed only by its own code, between two yields of the
    one OS thread every actor runs in, so a room reading the list never sees it half
    changed (the same argument as for the tree links in ``actors/base.py``).
    """

    __slots__ = ("rooms", "users")

    def __init__(self) -> None:
        self.rooms: list[Any] = []
        """Subscribers to every room's RoomMessage and RoomPresence."""
        self.users: list[Any] = []
        """Subscribers to every user's UserConnected, UserProfiled and UserDisconnected."""

    def subscribe(self, subscriber: Any, *, rooms: bool = False, users: bool = False) -> None:
        """Add ``subscriber`` to the lists asked for (once each)."""
        for wanted, subscribers in ((rooms, self.rooms), (users, self.users)):
            if wanted and subscriber not in subscribers:
                subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Any) -> None:
        """Remove ``subscriber`` from both lists (no-op where it is not)."""
        for subscribers in (self.rooms, self.users):
            while subscriber in subscribers:
                subscribers.remove(subscriber)
