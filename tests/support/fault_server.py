"""A hubbub node with test-only actor types that fail on demand (reliability tests).

Run as ``python tests/support/fault_server.py --port 0 ...``: the real server, the real
wiring, with UserActor and RoomActor replaced by subclasses that raise when a
`say` carries a magic text.  Production code paths are not edited: the failures
come in through the system's ``user_class`` / ``room_class`` extension points.
"""

from gevent import monkey

monkey.patch_all()  # noqa: E702, I001

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import server  # noqa: E402
from actors.core.messages import ClientFrame, RoomSay  # noqa: E402
from actors.room import RoomActor  # noqa: E402
from actors.user import UserActor  # noqa: E402

USER_BOOM = "__boom_user__"
ROOM_BOOM = "__boom_room__"


class FaultyUser(UserActor):
    def on_receive(self, message):
        if isinstance(message, ClientFrame) and USER_BOOM in str(message.data):
            raise RuntimeError("injected user failure")
        return super().on_receive(message)


class FaultyRoom(RoomActor):
    def on_receive(self, message):
        if isinstance(message, RoomSay) and message.text == ROOM_BOOM:
            raise RuntimeError("injected room failure")
        return super().on_receive(message)


if __name__ == "__main__":
    sys.exit(server.main(sys.argv[1:], user_class=FaultyUser, room_class=FaultyRoom))
