"""docs/operations.md --certfile/--keyfile: the real server serving https:// and wss:// itself.

A throwaway self-signed certificate for localhost and 127.0.0.1 is made per test
module (the `openssl` command line, else the `cryptography` package); every client
here verifies it like a browser would: the certificate as the only trusted CA, and
the host name checked.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect

from ..support.e2e import Client, Server

pytestmark = pytest.mark.e2e

NAMES = ("localhost", "127.0.0.1")


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate and its key (PEM files) valid for NAMES; (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if shutil.which("openssl"):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
        return str(cert), str(key)
    pytest.importorskip("cryptography", reason="needs the openssl command or `cryptography`")
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def trust(certificate) -> ssl.SSLContext:
    """A client context that trusts only our certificate and checks host names."""
    context = ssl.create_default_context(cafile=certificate[0])
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


@pytest.fixture(scope="module")
def server(certificate):
    with Server("--certfile", certificate[0], "--keyfile", certificate[1]) as srv:
        yield srv


class TestServingTLS:
    """docs/operations.md "Running": --certfile/--keyfile serve https:// and wss:// directly."""

    def test_listening_line_says_https(self, server):
        """The start-up line names https://, and the helper derives wss:// from it."""
        assert server.scheme == "https" and server.url.startswith("https://127.0.0.1:")
        assert server.ws_url.startswith("wss://")

    @pytest.mark.parametrize("host", NAMES)
    def test_chat_over_wss(self, server, trust, host):
        """Two clients chat over wss://, each verifying the certificate for the name it checks."""
        # Dialled at 127.0.0.1 (where the server listens); server_hostname is the name
        # the certificate must be valid for, as if the URL had been wss://localhost.
        with (
            Client(server, ssl=trust, server_hostname=host) as a,
            Client(server, ssl=trust, server_hostname=host) as b,
        ):
            tag = host.replace(".", "-")
            a.login(f"alice-{tag}", "tls")
            b.login(f"bob-{tag}", "tls")
            a.expect("presence", event="join", nick=f"bob-{tag}")
            a.say("tls", "over TLS")
            assert b.expect("message", room="tls")["text"] == "over TLS"

    def test_healthz_over_https(self, server, trust):
        """GET https://localhost:PORT/healthz with the same verifying context → 200 ok."""
        url = f"https://localhost:{server.port}/healthz"
        with urllib.request.urlopen(url, context=trust, timeout=5) as resp:
            assert resp.status == 200 and b'"status": "ok"' in resp.read()


class TestFailedHandshakes:
    """A client that cannot finish the TLS handshake fails at once; the server serves on.

    Each test has a server of its own, so a traceback from a failed handshake (server.py
    defers the handshake to the handler to avoid them) is reported against its own test.
    """

    def test_plain_client_fails_and_server_keeps_serving(self, certificate, trust):
        """ws:// to the TLS port → the client's handshake fails; wss:// works right after."""
        server = Server("--certfile", certificate[0], "--keyfile", certificate[1])
        try:
            with pytest.raises((InvalidHandshake, OSError, EOFError)):
                connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5)
            with Client(server, ssl=trust) as c:
                c.hello()
        finally:
            assert server.stop() == 0

    def test_wrong_name_is_refused_by_the_client(self, certificate, trust):
        """The check is real: the same certificate does not pass for another host name."""
        server = Server("--certfile", certificate[0], "--keyfile", certificate[1])
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                connect(
                    server.ws_url, ssl=trust, server_hostname="chat.example.com", open_timeout=5
                )
            with Client(server, ssl=trust) as c:
                c.hello()
        finally:
            assert server.stop() == 0

    def test_failed_handshakes_log_no_traceback(self, certificate, trust):
        """A plain-HTTP client and a client that rejects the certificate leave no traceback."""
        with Server("--certfile", certificate[0], "--keyfile", certificate[1]) as server:
            with pytest.raises((InvalidHandshake, OSError, EOFError)):
                connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5)
            with pytest.raises(ssl.SSLCertVerificationError):
                connect(
                    server.ws_url, ssl=trust, server_hostname="chat.example.com", open_timeout=5
                )
