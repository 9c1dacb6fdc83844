"""Who may use which nick: folding, signed tokens, and nicks held for their owners.

Pure: the clock is a ``now`` argument, the JWT check is PyJWT's signature check (no I/O)
with ``exp``/``nbf`` checked here against the injected wall time.

* :func:`fold` — nicks that look alike are one nick: `alice`, `Alice`, `ALICE`, `aIice` and
  `a1ice` fold to the same key, so they cannot be online together.
* :class:`Verifier` — `profile.token`, a JWT (HMAC with --auth-secret, or RS256/ES256/EdDSA
  with --auth-public-key) whose `nick` claim (else `sub`) is the nick it proves.
* :class:`Nicks` — the table of claims: who holds each folded nick, which nicks a token
  bound (only their token may claim them), and a dropped user's nick held for
  ``grace`` seconds for whoever shows its `resume` secret.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["fold", "IdentityError", "Verifier", "Nicks", "Claimed"]

# Case, then the ASCII characters that pass for one another in common fonts (after
# Unicode's confusables.txt for this alphabet): 1 I l | i, 0 o, and the pairs rn/m, vv/w.
_SINGLE = str.maketrans({"1": "l", "i": "l", "0": "o"})


def fold(nick: str) -> str:
    """The key under which a nick is unique."""
    return nick.lower().translate(_SINGLE).replace("rn", "m").replace("vv", "w")


class IdentityError(Exception):
    """A token that proves nothing; the message says why (sent to the client)."""


class Verifier:
    ALGORITHMS_HMAC = ("HS256", "HS384", "HS512")
    ALGORITHMS_KEY = ("RS256", "ES256", "EdDSA")

    def __init__(
        self,
        key: str | bytes,
        public: bool = False,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 30.0,
    ) -> None:
        import jwt  # PyJWT: only needed with --auth-*

        self._jwt = jwt
        self.key: Any = key
        if public:
            from jwt.algorithms import get_default_algorithms

            algs = get_default_algorithms()
            # Parse once; a bad key file fails at start-up, not at the first profile.
            pem = key.encode() if isinstance(key, str) else key
            for name in self.ALGORITHMS_KEY:
                try:
                    self.key = algs[name].prepare_key(pem)
                    self.algorithms: tuple[str, ...] = (name,)
                    break
                except Exception:  # noqa: BLE001 - try the next key type
                    continue
            else:
                raise ValueError("the public key is not an RSA, EC (P-256) or Ed25519 PEM key")
        else:
            self.algorithms = self.ALGORITHMS_HMAC
        self.audience, self.issuer, self.leeway = audience, issuer, leeway

    def nick(self, token: str, now: float) -> str:
        """The nick ``token`` proves, at wall time ``now``; IdentityError if none."""
        jwt = self._jwt
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                # exp/nbf against the injected clock below, not PyJWT's own time.time().
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise IdentityError(f"the token is not valid: {exc}") from None
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if isinstance(exp, (int, float)) and now > exp + self.leeway:
            raise IdentityError("the token has expired")
        if isinstance(nbf, (int, float)) and now < nbf - self.leeway:
            raise IdentityError("the token is not valid yet")
        nick = claims.get("nick", claims.get("sub"))
        if not isinstance(nick, str):
            raise IdentityError("the token has no `nick` or `sub` claim")
        return nick


@dataclass(frozen=True, slots=True)
class Claimed:
    """The answer to one claim."""

    ok: bool
    code: str | None = None
    """Error code when not ok: nick_taken or unauthorized."""
    message: str = ""
    resume: str | None = None
    """The new resume secret (ok only)."""
    evict: str | None = None
    """A session that held the nick and must go (its owner reclaimed it)."""
    old: str | None = None
    """The nick this session held before, now released (a rename)."""


@dataclass(slots=True)
class _Holder:
    session: str
    nick: str
    secret: str
    verified: bool


class Nicks:
    """The nick table of one node."""

    def __init__(
        self,
        grace: float = 30.0,
        require_token: bool = False,
        bound_limit: int = 65536,
        secret: Callable[[], str] = lambda: secrets.token_urlsafe(18),
    ) -> None:
        self.grace = grace
        self.require_token = require_token
        self.bound_limit = bound_limit
        self._secret = secret
        self.holders: dict[str, _Holder] = {}
        """folded nick → who holds it now."""
        self.by_session: dict[str, str] = {}
        """session → folded nick it holds."""
        self.held: OrderedDict[str, tuple[float, _Holder]] = OrderedDict()
        """folded nick → (until, last holder): dropped, kept for its owner until then."""
        self.bound: OrderedDict[str, None] = OrderedDict()
        """folded nicks claimed with a token recently (newest last, at most bound_limit)."""

    def __len__(self) -> int:
        return len(self.holders)

    def session_of(self, nick: str) -> str | None:
        h = self.holders.get(fold(nick))
        return h.session if h is not None else None

    def nick_of(self, session: str) -> str | None:
        key = self.by_session.get(session)
        return self.holders[key].nick if key is not None else None

    def claim(
        self, session: str, nick: str, now: float, verified: bool = False, resume: str | None = None
    ) -> Claimed:
        """``session`` asks for ``nick``; ``verified``: a valid token proved it is theirs."""
        self._expire(now)
        key = fold(nick)
        if self.require_token and not verified:
            return Claimed(False, "unauthorized", "this server needs a `token` in `profile`")
        holder = self.holders.get(key)
        hold = self.held.get(key)
        evict = None
        if holder is not None and holder.session != session:
            if verified or (resume is not None and secrets.compare_digest(resume, holder.secret)):
                evict = holder.session  # the owner is back; the stale connection goes
            else:
                return Claimed(False, "nick_taken", f"{nick!r} is taken")
        elif holder is None and hold is not None:
            owner = hold[1]
            if not (
                verified or (resume is not None and secrets.compare_digest(resume, owner.secret))
            ):
                return Claimed(
                    False, "nick_taken", f"{nick!r} is held for its owner for a few seconds"
                )
        if holder is None and not verified and key in self.bound:
            return Claimed(False, "nick_taken", f"{nick!r} belongs to a signed-in user")
        if evict is not None:
            self.by_session.pop(evict, None)
        self.held.pop(key, None)
        old = None
        prev = self.by_session.get(session)
        if prev is not None and prev != key:
            old = self.holders.pop(prev).nick
        entry = _Holder(session, nick, self._secret(), verified)
        self.holders[key] = entry
        self.by_session[session] = key
        if verified:
            self.bound[key] = None
            self.bound.move_to_end(key)
            while len(self.bound) > self.bound_limit:
                self.bound.popitem(last=False)
        return Claimed(True, resume=entry.secret, evict=evict, old=old)

    def release(self, session: str, now: float, hold: bool = True) -> str | None:
        """``session`` is gone; its nick (if any) is held for ``grace`` seconds.  The nick."""
        key = self.by_session.pop(session, None)
        if key is None:
            return None
        holder = self.holders.pop(key)
        if hold and self.grace > 0:
            self.held[key] = (now + self.grace, holder)
            self.held.move_to_end(key)
        self._expire(now)
        return holder.nick

    def _expire(self, now: float) -> None:
        # Same grace for all: insertion order is expiry order.
        held = self.held
        while held:
            key, (until, _h) = next(iter(held.items()))
            if until > now:
                break
            del held[key]
