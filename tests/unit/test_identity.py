"""Identity (actors/core/identity.py): folding, signed tokens, nicks held for their owners."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from actors.core.identity import IdentityError, Nicks, Verifier, fold

NOW = 1_700_000_000.0
SECRET = "s3cret-" + "x" * 32
K = "k" * 32


class TestFold:
    """Nick uniqueness folds case and look-alike characters."""

    def test_the_issue_examples_are_one_nick(self):
        """alice, Alice, ALICE, aIice and a1ice cannot coexist."""
        assert len({fold(n) for n in ("alice", "Alice", "ALICE", "aIice", "a1ice", "AL1CE")}) == 1

    @pytest.mark.parametrize(
        "a,b", [("bob0", "BOBO"), ("modern", "modem"), ("vvalter", "walter"), ("ii", "ll")]
    )
    def test_confusable_pairs(self, a, b):
        assert fold(a) == fold(b)

    @pytest.mark.parametrize(
        "a,b", [("alice", "alicia"), ("bob", "b0t"), ("a_b", "a-b"), ("x", "y")]
    )
    def test_different_nicks_stay_different(self, a, b):
        assert fold(a) != fold(b)


def keys(kind: str):
    if kind == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


class TestVerifier:
    def test_hmac_token_proves_its_nick(self):
        """A token signed with --auth-secret proves its `nick` claim (else `sub`)."""
        v = Verifier(SECRET)
        assert v.nick(jwt.encode({"nick": "alice"}, SECRET, algorithm="HS256"), NOW) == "alice"
        assert v.nick(jwt.encode({"sub": "bob"}, SECRET, algorithm="HS256"), NOW) == "bob"

    def test_wrong_secret_or_garbage_proves_nothing(self):
        v = Verifier(SECRET)
        with pytest.raises(IdentityError):
            v.nick(jwt.encode({"nick": "alice"}, "o" * 32, algorithm="HS256"), NOW)
        with pytest.raises(IdentityError):
            v.nick("not.a.token", NOW)
        with pytest.raises(IdentityError, match="no `nick`"):
            v.nick(jwt.encode({"x": 1}, SECRET, algorithm="HS256"), NOW)

    def test_none_algorithm_is_refused(self):
        """An unsigned token (alg none) never passes, whatever it claims."""
        with pytest.raises(IdentityError):
            Verifier(SECRET).nick(jwt.encode({"nick": "alice"}, None, algorithm="none"), NOW)

    def test_expiry_on_the_injected_clock(self):
        """exp and nbf are checked against the `now` given (30 s leeway), not the machine's clock."""
        v = Verifier(K)
        token = jwt.encode({"nick": "a", "exp": NOW + 60, "nbf": NOW - 10}, K, algorithm="HS256")
        assert v.nick(token, NOW) == "a"
        assert v.nick(token, NOW + 89) == "a"
        with pytest.raises(IdentityError, match="expired"):
            v.nick(token, NOW + 91)
        with pytest.raises(IdentityError, match="not valid yet"):
            v.nick(token, NOW - 100)

    def test_audience_and_issuer(self):
        v = Verifier(K, audience="chat", issuer="https://id.example")
        good = jwt.encode(
            {"nick": "a", "aud": "chat", "iss": "https://id.example"}, K, algorithm="HS256"
        )
        assert v.nick(good, NOW) == "a"
        for bad in (
            {"nick": "a", "aud": "other", "iss": "https://id.example"},
            {"nick": "a", "aud": "chat"},
        ):
            with pytest.raises(IdentityError):
                v.nick(jwt.encode(bad, K, algorithm="HS256"), NOW)

    @pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
    def test_public_keys(self, alg):
        """--auth-public-key: RSA, EC P-256 and Ed25519 keys, and only their own algorithm."""
        private, public = keys(alg)
        v = Verifier(public, public=True)
        assert v.algorithms == (alg,)
        assert v.nick(jwt.encode({"nick": "carol"}, private, algorithm=alg), NOW) == "carol"
        with pytest.raises(IdentityError):  # the public key used as an HMAC secret
            v.nick(jwt.encode({"nick": "carol"}, "x" * 32, algorithm="HS256"), NOW)

    def test_a_bad_key_fails_at_start(self):
        with pytest.raises(ValueError):
            Verifier(b"not a pem", public=True)


def table(grace: float = 30.0, **kw) -> Nicks:
    n = iter(range(1000))
    return Nicks(grace, secret=lambda: f"r{next(n)}", **kw)


class TestNicks:
    def test_folded_nicks_are_taken(self):
        """Once alice is online, Alice / aIice / a1ice are nick_taken."""
        t = table()
        assert t.claim("s1", "alice", 0).ok
        for other in ("Alice", "aIice", "a1ice"):
            got = t.claim("s2", other, 0)
            assert not got.ok and got.code == "nick_taken"
        assert t.session_of("ALICE") == "s1"

    def test_renaming_within_the_fold_is_allowed(self):
        """A user may change the case of its own nick; the old spelling is given back."""
        t = table()
        t.claim("s1", "alice", 0)
        got = t.claim("s1", "Alice", 0)
        assert got.ok and got.old is None and t.nick_of("s1") == "Alice"
        got = t.claim("s1", "bob", 0)
        assert got.ok and got.old == "Alice" and t.session_of("alice") is None

    def test_a_dropped_nick_is_held_for_its_owner(self):
        """For `grace` seconds only the resume secret (from profile_ok) claims it; then anyone."""
        t = table(grace=30)
        secret = t.claim("s1", "alice", 0).resume
        t.release("s1", 10)
        got = t.claim("s2", "alice", 20)
        assert not got.ok and got.code == "nick_taken"
        assert not t.claim("s2", "alice", 20, resume="wrong").ok
        got = t.claim("s3", "alice", 21, resume=secret)
        assert got.ok and got.resume != secret, "a new secret for the new connection"
        t.release("s3", 22)
        assert t.claim("s4", "alice", 52.1).ok, "grace over"

    def test_no_grace_frees_at_once(self):
        t = table(grace=0)
        t.claim("s1", "alice", 0)
        t.release("s1", 1)
        assert t.claim("s2", "alice", 1).ok

    def test_plugins_are_not_held(self):
        """release(hold=False): a restarted plugin claims its nick again at once."""
        t = table()
        t.claim("p", "echo", 0)
        t.release("p", 1, hold=False)
        assert t.claim("p2", "echo", 1).ok

    def test_resume_evicts_a_stale_holder(self):
        """The owner reconnects before its old connection is noticed as dead: the old one goes."""
        t = table()
        secret = t.claim("s1", "alice", 0).resume
        got = t.claim("s2", "alice", 5, resume=secret)
        assert got.ok and got.evict == "s1" and t.session_of("alice") == "s2"
        assert t.release("s1", 6) is None, "the evicted session holds nothing any more"
        assert t.session_of("alice") == "s2"

    def test_token_reclaims_and_binds(self):
        """A verified claim takes the nick from anyone; afterwards guests cannot use it."""
        t = table()
        t.claim("guest", "alice", 0)
        got = t.claim("owner", "Alice", 1, verified=True)
        assert got.ok and got.evict == "guest"
        t.release("owner", 2)
        for now in (3, 100):  # held, then grace over: still bound to its token
            got = t.claim("guest2", "alice", now)
            assert not got.ok and got.code == "nick_taken"
        assert t.claim("owner2", "alice", 100, verified=True).ok

    def test_required_mode_refuses_guests(self):
        t = table(require_token=True)
        got = t.claim("s1", "alice", 0)
        assert not got.ok and got.code == "unauthorized"
        assert t.claim("s1", "alice", 0, verified=True).ok

    def test_bound_nicks_are_bounded(self):
        t = table(bound_limit=2)
        for i, nick in enumerate(("a", "b", "c")):
            t.claim(f"s{i}", nick, 0, verified=True)
            t.release(f"s{i}", 0, hold=False)
        assert t.claim("g", "a", 0).ok, "the oldest binding was forgotten"
        assert not t.claim("g2", "c", 0).ok
