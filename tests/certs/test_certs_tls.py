"""Real TLS handshakes on 127.0.0.1 with our contexts: both sides of mutual TLS."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from certs.tls import client_ssl_context, server_ssl_context, uvicorn_ssl_options
from hub.errors import ConfigurationError


class OneShotServer:
    """Accepts one TLS connection, answers with the client's CN (or 'anonymous'), records failures."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.error: BaseException | None = None
        self.peer_cn: str | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            raw, _ = self.sock.accept()
            raw.settimeout(10)
            with self.context.wrap_socket(raw, server_side=True) as tls:
                cert = tls.getpeercert()
                subject = dict(item for rdn in cert["subject"] for item in rdn) if cert else {}
                self.peer_cn = subject.get("commonName", "anonymous")
                tls.sendall(self.peer_cn.encode())
        except (ssl.SSLError, OSError) as exc:
            self.error = exc
        finally:
            self.sock.close()

    def join(self) -> None:
        self.thread.join(10)


def talk(port: int, context: ssl.SSLContext, server_hostname: str = "localhost") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.recv(100)


@pytest.fixture
def mtls_server(pki):
    """An agency (SCJG) serving mutual TLS: client certificates must chain to our CA."""
    files = pki.party("SCJG")
    server = OneShotServer(
        server_ssl_context(files.server_cert, files.server_key, client_ca=pki.ca_cert, require_client_cert=True)
    )
    yield server
    server.join()


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_the_hub_client_certificate_is_accepted(pki, mtls_server, hostname):
    context = client_ssl_context(pki.ca_cert, pki.hub.client_cert, pki.hub.client_key)
    assert talk(mtls_server.port, context, hostname) == b"HUB"
    mtls_server.join()
    assert mtls_server.error is None and mtls_server.peer_cn == "HUB"


def _client_without_cert(pki, foreign_pki):
    return client_ssl_context(pki.ca_cert)


def _client_from_another_ca(pki, foreign_pki):
    return client_ssl_context(pki.ca_cert, foreign_pki.hub.client_cert, foreign_pki.hub.client_key)


def _client_with_a_server_only_certificate(pki, foreign_pki):
    # Right CA, wrong purpose: its extended key usage says serverAuth only.
    return client_ssl_context(pki.ca_cert, pki.hub.server_cert, pki.hub.server_key)


@pytest.mark.parametrize(
    "make_client", [_client_without_cert, _client_from_another_ca, _client_with_a_server_only_certificate]
)
def test_the_agency_refuses_a_hub_without_a_valid_client_certificate(pki, foreign_pki, mtls_server, make_client):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        # TLS 1.3 reports the server's refusal on the first read, not during the handshake.
        talk(mtls_server.port, make_client(pki, foreign_pki))
    mtls_server.join()
    assert isinstance(mtls_server.error, ssl.SSLError)
    assert mtls_server.peer_cn is None


def test_the_hub_refuses_an_agency_whose_server_certificate_is_from_another_ca(pki, foreign_pki):
    files = foreign_pki.party("SCJG")
    server = OneShotServer(server_ssl_context(files.server_cert, files.server_key))
    context = client_ssl_context(pki.ca_cert, pki.hub.client_cert, pki.hub.client_key)
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(server.port, context)
    server.join()


def test_the_hub_refuses_a_server_certificate_for_another_name(pki):
    files = pki.party("SCJG")
    server = OneShotServer(server_ssl_context(files.server_cert, files.server_key))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
        talk(server.port, client_ssl_context(pki.ca_cert), server_hostname="scjg.example.gov.cn")
    server.join()


def test_optional_client_certificates_let_anonymous_clients_in(pki):
    files = pki.party("SCJG")
    server = OneShotServer(server_ssl_context(files.server_cert, files.server_key, client_ca=pki.ca_cert))
    assert talk(server.port, client_ssl_context(pki.ca_cert)) == b"anonymous"
    server.join()


def test_contexts_refuse_tls_older_than_1_2(pki):
    files = pki.party("SCJG")
    assert server_ssl_context(files.server_cert, files.server_key).minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client_ssl_context(pki.ca_cert).minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    "build",
    [
        lambda pki, tmp: server_ssl_context(tmp / "missing.pem", pki.hub.server_key),
        lambda pki, tmp: server_ssl_context(pki.hub.server_cert, pki.hub.client_key),  # key of another cert
        lambda pki, tmp: server_ssl_context(pki.hub.server_cert, pki.hub.server_key, require_client_cert=True),
        lambda pki, tmp: client_ssl_context(tmp / "missing-ca.pem"),
        lambda pki, tmp: client_ssl_context(pki.ca_cert, pki.hub.client_cert),
    ],
    ids=["missing cert", "mismatched key", "mtls without ca", "missing ca", "cert without key"],
)
def test_bad_tls_configuration_is_a_configuration_error(pki, tmp_path, build):
    with pytest.raises(ConfigurationError) as error:
        build(pki, tmp_path)
    assert "PRIVATE KEY" not in str(error.value)


def test_uvicorn_options_require_client_certificates_when_asked(pki):
    options = uvicorn_ssl_options(pki.hub.server_cert, pki.hub.server_key, client_ca=pki.ca_cert, require_client_cert=True)
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert options["ssl_ca_certs"] == str(pki.ca_cert)
