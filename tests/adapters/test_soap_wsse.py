"""WS-Security with the sandbox 地税局 (DSJ), over real sockets on 127.0.0.1.

The hub signs with its signing key; the agency verifies against the hub's certificate on file
and signs its answers with its own key; the hub verifies those against the agency's
certificate. Keys come from a development PKI made at test time (certs.pki). Tampering is done
by a man-in-the-middle proxy on a loopback socket.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from lxml import etree

from adapters import AdapterContext, TlsFiles, build_adapter
from adapters.base import Cursor
from adapters.soap import reset_clients
from adapters.soap_wsse import SOAP_ENV, HubWsse, verify_signed_envelope
from certs.pki import PkiLayout, init_pki
from hub.errors import ConfigurationError, FatalError, RefusedInput, TransientError
from sandbox.core import LoopbackHTTPServer
from sandbox.soap_agencies import default_book, start_soap_agency
from sandbox.soap_wsse import AgencyWsse
from test_soap import soap_messages, soap_spec  # same directory: pytest puts it on sys.path

PASSWORD = "dsj-exchange-password"  # noqa: S105 - a test credential for a loopback sandbox
Tamper = Callable[[bytes], bytes]


@pytest.fixture(scope="module")
def soap_pki(tmp_path_factory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"), parties=[("DSJ", "地税局南开分局")])


@pytest.fixture(scope="module")
def soap_rogue_pki(tmp_path_factory) -> PkiLayout:
    """Another PKI: same names, different keys — what an impostor would hold."""
    return init_pki(tmp_path_factory.mktemp("rogue"), parties=[("DSJ", "地税局南开分局")])


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    yield
    reset_clients()


class _UnsignedAgencyWsse(AgencyWsse):
    def sign_response(self, envelope) -> None:  # an agency (or impostor) that forgets to sign
        pass


def _agency_policy(pki: PkiLayout, *, hub_pki: PkiLayout | None = None, unsigned: bool = False) -> AgencyWsse:
    kind = _UnsignedAgencyWsse if unsigned else AgencyWsse
    return kind(hub_cert_pem=(hub_pki or pki).hub.signing_cert.read_bytes(),
                agency_key_pem=pki.party("DSJ").signing_key.read_bytes(),
                agency_cert_pem=pki.party("DSJ").signing_cert.read_bytes(),
                username="shenguan-hub", password=PASSWORD)  # fmt: skip


def _adapter(endpoint: str, tmp_path: Path, *, hub: PkiLayout, trusted_agency: PkiLayout,
             wsse: bool = True, password: str = PASSWORD):  # fmt: skip
    extra = {"wsse": {"username": "shenguan-hub"}} if wsse else {}
    spec = soap_spec("DSJ", endpoint, **extra)
    tls = TlsFiles(hub_signing_cert=hub.hub.signing_cert, hub_signing_key=hub.hub.signing_key,
                   agency_cert=trusted_agency.party("DSJ").signing_cert)  # fmt: skip
    context = AdapterContext(work_dir=tmp_path, secret=password, tls=tls, connect_timeout=1.0, read_timeout=2.0)
    return spec, build_adapter(spec, context)


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.server.tamper_request(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.seen.append(body)
        upstream = requests.post(self.server.upstream, data=body, timeout=5,
                                 headers={"Content-Type": self.headers.get("Content-Type", "text/xml"),
                                          "SOAPAction": self.headers.get("SOAPAction", "")})  # fmt: skip
        answer = self.server.tamper_response(upstream.content)
        self.server.answers.append(answer)
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", upstream.headers.get("Content-Type", "text/xml"))
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class _ProxyServer(LoopbackHTTPServer):
    def __init__(self, upstream: str, tamper_request: Tamper, tamper_response: Tamper) -> None:
        super().__init__(_Proxy)
        self.upstream, self.tamper_request, self.tamper_response = upstream, tamper_request, tamper_response
        self.seen: list[bytes] = []
        self.answers: list[bytes] = []


def _unchanged(data: bytes) -> bytes:
    return data


@pytest.fixture
def dsj(soap_pki):
    agency = start_soap_agency("DSJ", book=default_book("DSJ"), security=_agency_policy(soap_pki))
    yield agency
    agency.stop()


def test_signed_exchange_is_accepted_both_ways(dsj, soap_pki, tmp_path):
    proxy = _ProxyServer(dsj.endpoint, _unchanged, _unchanged).start()
    try:
        spec, adapter = _adapter(proxy.url + "/dsj/services/JiaoHuanFuWu", tmp_path, hub=soap_pki,
                                 trusted_agency=soap_pki)  # fmt: skip
        messages = soap_messages(spec, range(1, 3))
        receipts = adapter.deliver(messages)
        page = adapter.fetch(Cursor())
    finally:
        proxy.stop()
    assert [r.message_id for r in receipts] == [m.message_id for m in messages]
    assert [dsj.book.received[m.message_id].payload for m in messages] == [m.payload for m in messages]
    assert [r.ref for r in page.records] == [p.record_id for p in dsj.book.penalties[: len(page.records)]]
    request = proxy.seen[0]
    assert b"xmldsig-more#ecdsa-sha256" in request and b"xmlenc#sha256" in request
    assert b"xmldsig#sha1" not in request and b"xmldsig#rsa-sha1" not in request
    assert b"PasswordDigest" in request and PASSWORD.encode() not in request


def _rename_company(data: bytes) -> bytes:
    return data.replace("测试1号".encode(), "测试9号".encode())


@pytest.mark.parametrize(
    ("case", "reason"),
    [("unsigned", "wsse:Security header is required"), ("wrong-key", "does not verify"),
     ("wrong-password", "password is wrong"), ("tampered-body", "does not verify")],
)  # fmt: skip
def test_agency_refuses_requests_it_cannot_trust(case, reason, dsj, soap_pki, soap_rogue_pki, tmp_path):
    proxy = _ProxyServer(dsj.endpoint, _rename_company if case == "tampered-body" else _unchanged, _unchanged).start()
    try:
        spec, adapter = _adapter(proxy.url + "/dsj/services/JiaoHuanFuWu", tmp_path,
                                 hub=soap_rogue_pki if case == "wrong-key" else soap_pki, trusted_agency=soap_pki,
                                 wsse=case != "unsigned",
                                 password="guess" if case == "wrong-password" else PASSWORD)  # fmt: skip
        with pytest.raises(FatalError, match=f"SOAP fault Client: WS-Security: .*{reason}"):
            adapter.deliver(soap_messages(spec, range(1, 2)))
    finally:
        proxy.stop()
    assert dsj.book.licences() == []


def _forge_ack(data: bytes) -> bytes:
    return data.replace(b"DSJ-ACK-00000001", b"DSJ-ACK-00000999").replace(b"<tns:xuHao>1<", b"<tns:xuHao>9<")


def _duplicate_body_id(data: bytes) -> bytes:
    """A wrapping attempt: a second element carrying the signed Body's id, as xml:id."""
    envelope = etree.fromstring(data)
    body = next(e for e in envelope if etree.QName(e).localname == "Body")
    body_id = next(v for k, v in body.attrib.items() if etree.QName(k).localname == "Id")
    header = next(e for e in envelope if etree.QName(e).localname == "Header")
    decoy = etree.SubElement(header, "{urn:decoy}Body")
    decoy.set("{http://www.w3.org/XML/1998/namespace}id", body_id)
    return etree.tostring(envelope)


_ANSWERS = {"tampered-body": _forge_ack, "xml:id-wrapping": _duplicate_body_id}


@pytest.mark.parametrize(
    ("case", "reason"),
    [("unsigned", "no wsse:Security header"), ("signed-by-impostor", "does not verify"),
     ("tampered-body", "does not verify"), ("xml:id-wrapping", "ambiguous")],
)
@pytest.mark.parametrize(("operation", "expected"), [("deliver", FatalError), ("fetch", RefusedInput)])
def test_hub_refuses_responses_it_cannot_trust(case, reason, operation, expected, soap_pki, soap_rogue_pki,
                                               tmp_path):  # fmt: skip
    signer = soap_rogue_pki if case == "signed-by-impostor" else soap_pki
    policy = _agency_policy(signer, hub_pki=soap_pki, unsigned=case == "unsigned")
    agency = start_soap_agency("DSJ", book=default_book("DSJ"), security=policy)
    proxy = _ProxyServer(agency.endpoint, _unchanged, _ANSWERS.get(case, _unchanged)).start()
    try:
        spec, adapter = _adapter(proxy.url + "/dsj/services/JiaoHuanFuWu", tmp_path, hub=soap_pki,
                                 trusted_agency=soap_pki)  # fmt: skip
        messages = soap_messages(spec, range(1, 2))
        if operation == "fetch":
            agency.book.receive(messages[0].message_id, messages[0].payload)
        with pytest.raises(expected, match=f"response refused: .*{reason}") as caught:
            adapter.deliver(messages) if operation == "deliver" else adapter.fetch(Cursor())
    finally:
        proxy.stop()
        agency.stop()
    assert type(caught.value) is expected
    if case == "tampered-body":  # the forgery really happened on the wire
        assert any(b"DSJ-ACK-00000999" in a or b"<tns:xuHao>9<" in a for a in proxy.answers)


def test_missing_signing_material_is_a_configuration_error(soap_pki, tmp_path):
    spec = soap_spec("DSJ", "http://127.0.0.1:9/x", wsse={"username": "shenguan-hub"})
    context = AdapterContext(work_dir=tmp_path, secret=PASSWORD,
                             tls=TlsFiles(agency_cert=soap_pki.party("DSJ").signing_cert))  # fmt: skip
    with pytest.raises(ConfigurationError, match="DSJ: WS-Security needs the hub's signing key"):
        build_adapter(spec, context)
    no_secret = AdapterContext(work_dir=tmp_path, tls=TlsFiles(
        hub_signing_cert=soap_pki.hub.signing_cert, hub_signing_key=soap_pki.hub.signing_key,
        agency_cert=soap_pki.party("DSJ").signing_cert))  # fmt: skip
    with pytest.raises(ConfigurationError, match="credentials"):
        build_adapter(spec, no_secret)


# --- mutual TLS ----------------------------------------------------------------------------------
@pytest.fixture
def dsj_mtls(soap_pki):
    from certs.tls import server_ssl_context

    party = soap_pki.party("DSJ")
    context = server_ssl_context(party.server_cert, party.server_key, client_ca=soap_pki.ca_cert,
                                 require_client_cert=True)  # fmt: skip
    agency = start_soap_agency("DSJ", book=default_book("DSJ"), ssl_context=context)
    yield agency
    agency.stop()


def _mtls_adapter(endpoint: str, tmp_path: Path, *, ca: Path, client: PkiLayout | None):
    tls = TlsFiles(ca=ca, client_cert=client.hub.client_cert if client else None,
                   client_key=client.hub.client_key if client else None)  # fmt: skip
    spec = soap_spec("DSJ", endpoint)
    return spec, build_adapter(spec, AdapterContext(work_dir=tmp_path, tls=tls, connect_timeout=1.0, read_timeout=2.0))


def test_mtls_agency_accepts_the_hub_certificate(dsj_mtls, soap_pki, tmp_path):
    assert dsj_mtls.endpoint.startswith("https://127.0.0.1:")
    spec, adapter = _mtls_adapter(dsj_mtls.endpoint, tmp_path, ca=soap_pki.ca_cert, client=soap_pki)
    [message] = soap_messages(spec, range(1, 2))
    assert adapter.deliver([message])[0].message_id == message.message_id
    assert dsj_mtls.book.received[message.message_id].payload == message.payload


@pytest.mark.parametrize("case", ["no-client-cert", "client-cert-from-another-ca", "agency-not-trusted"])
def test_mtls_refusals_record_nothing(case, dsj_mtls, soap_pki, soap_rogue_pki, tmp_path):
    ca = soap_rogue_pki.ca_cert if case == "agency-not-trusted" else soap_pki.ca_cert
    client = {"no-client-cert": None, "client-cert-from-another-ca": soap_rogue_pki}.get(case, soap_pki)
    spec, adapter = _mtls_adapter(dsj_mtls.endpoint, tmp_path, ca=ca, client=client)
    # a refused handshake is a configuration problem (retrying will not make a certificate good);
    # under TLS 1.3 the server's refusal of our certificate may reach us as a reset line instead
    expected = ConfigurationError if case == "agency-not-trusted" else (ConfigurationError, TransientError)
    with pytest.raises(expected, match="DSJ"):
        adapter.deliver(soap_messages(spec, range(1, 2)))
    assert dsj_mtls.book.licences() == []


def test_a_captured_signed_request_cannot_be_replayed(dsj, soap_pki, tmp_path):
    proxy = _ProxyServer(dsj.endpoint, _unchanged, _unchanged).start()
    try:
        spec, adapter = _adapter(proxy.url + "/dsj/services/JiaoHuanFuWu", tmp_path, hub=soap_pki,
                                 trusted_agency=soap_pki)  # fmt: skip
        adapter.deliver(soap_messages(spec, range(1, 2)))
    finally:
        proxy.stop()
    replay = requests.post(dsj.endpoint, data=proxy.seen[0], timeout=5,
                           headers={"Content-Type": "text/xml; charset=utf-8"})  # fmt: skip
    assert replay.status_code == 500 and b"nonce replayed" in replay.content
    assert [r.times_seen for r in dsj.book.received.values()] == [1]


@pytest.mark.parametrize(("minutes_later", "current"), [(0, True), (9, True), (11, False), (-6, False)])
def test_a_signed_answer_counts_only_while_its_timestamp_is_current(soap_pki, minutes_later, current):
    """Valid for its 5-minute TTL plus 5 minutes of clock skew either way: a captured answer replayed
    later (or one dated in the future) is refused though its signature still verifies."""
    party = soap_pki.party("DSJ")
    # relative to now: the PKI is made at test time and the agency's certificate must be valid then
    signed_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=10)
    signer = HubWsse(signing_key_pem=party.signing_key.read_bytes(), signing_cert_pem=party.signing_cert.read_bytes(),
                     agency_cert_pem=None, clock=lambda: signed_at)  # fmt: skip
    envelope = etree.fromstring(f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Header/><soap:Body>'
                                '<r xmlns="urn:answer">ok</r></soap:Body></soap:Envelope>')  # fmt: skip
    signed, _ = signer.apply(envelope, {})
    received = etree.fromstring(etree.tostring(signed))
    now = signed_at + dt.timedelta(minutes=minutes_later)
    if current:
        verify_signed_envelope(received, party.signing_cert.read_bytes(), now=now)
    else:
        with pytest.raises(ValueError, match="wsu:Timestamp is not current"):
            verify_signed_envelope(received, party.signing_cert.read_bytes(), now=now)
