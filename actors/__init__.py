"""hubbub's actors and the pure core they wrap.

Public surface: the actor system of a node, the actor base class for new actor
types, the state machine, and the clock protocol.  Everything else is private
to the package (import it from its module at your own risk).
"""

from .base import HubbubActor
from .clock import Clock, MonotonicClock
from .core.messages import Deliver, Kick
from .core.session import Limits, Session, Timeouts, UserState
from .plugins.actor import PluginActor
from .system import ActorSystem

__all__ = [
    "ActorSystem",
    "Clock",
    "Deliver",
    "HubbubActor",
    "Kick",
    "Limits",
    "MonotonicClock",
    "PluginActor",
    "Session",
    "Timeouts",
    "UserState",
]
