"""The pure core: no I/O, no gevent, no pykka, no sockets, no clock reads.

Everything a user's life is decided by (the session state machine, the timer heap, the
codec, room history, the typed messages actors exchange, the counters) lives here and
is tested on a fake clock, byte for byte.  The actor shells in ``actors/`` carry the
effects out.
"""
