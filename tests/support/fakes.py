"""Recording fakes for the pure core: now public in :mod:`hubbub.testing` (re-exported here)."""

from hubbub.testing import FakeClock, RecordingConn, SessionDriver

__all__ = ["FakeClock", "RecordingConn", "SessionDriver"]
