"""hubbub's edge: configuration, the hardened WebSocket transport, HTTP routes, telemetry.

The actors and the pure core live in the ``actors`` package; ``server.py`` wires
both together.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
