# The in-process tests (actors, transport) run on gevent like the server does:
# patch before anything else imports socket or threading.
from gevent import monkey

monkey.patch_all()
