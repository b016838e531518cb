"""REST error mapping as a table: what the agency (or the network) does → the error kind the hub sees.

Every row runs over a real loopback socket against a sandbox agency, for a pull and for a
delivery, in each agency's dialect. A failing call raises; it never returns a partial page.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
import ssl
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters import AdapterContext, build_adapter
from adapters.base import Cursor, OutboundMessage
from adapters.http_headers import retry_after_seconds
from adapters.rest import RestAdapter
from contracts.registry import load_registry
from hub.errors import ConfigurationError, FatalError, HubError, TransientError
from sandbox.core import Fault
from sandbox.rest_agencies import RunningAgency, start_rest_agency

READ_TIMEOUT = 0.3  # the sandbox holds a TIMEOUT request for 2 s, far past this
MESSAGE = OutboundMessage("5b7f8c6e-0000-4000-8000-000000000001", "津南审批许字〔2026〕0001号", {"k": "v"})


def _http_date(seconds_ahead: int) -> str:
    return email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_ahead), usegmt=True)


def fault(kind: Fault) -> Callable[[RunningAgency], dict]:
    def arrange(agency: RunningAgency) -> dict:
        agency.book.inject(kind)
        return {}

    return arrange


def answer(status: int, body: str, **headers: str | Callable[[], str]) -> Callable[[RunningAgency], dict]:
    """A canned answer; a header given as a function is computed when the test runs, not when it is collected."""

    def arrange(agency: RunningAgency) -> dict:
        agency.queue_response(status, body, {name: v() if callable(v) else v for name, v in headers.items()})
        return {}

    return arrange


def stopped(agency: RunningAgency) -> dict:
    agency.stop()  # nothing listens on that port any more: connection refused
    return {}


def wrong_token(agency: RunningAgency) -> dict:
    if agency.token is None:  # an agency without auth: its gateway refuses instead
        agency.queue_response(401, '{"error": "unauthorized"}')
        return {}
    return {"secret": "not-the-token"}


def wrong_paths(agency: RunningAgency) -> dict:
    return {"transport": {"pull_path": "/no/such/path", "push_path": "/no/such/path"}}


# (row id, arrange, expected kind, expected retry_after: None, a number, or (low, high))
TABLE = [
    ("429 Retry-After seconds", fault(Fault.RATE_LIMIT), TransientError, 7.0),
    ("429 Retry-After HTTP-date", answer(429, "{}", **{"Retry-After": lambda: _http_date(120)}), TransientError, (60, 121)),
    ("500", fault(Fault.ERROR_500), TransientError, None),
    ("503 HTML from a gateway", answer(503, "<html>Service Unavailable</html>"), TransientError, None),
    ("408 from a proxy", answer(408, "<html>Request Timeout</html>", **{"Content-Type": "text/html"}), TransientError,
     None),
    ("400", answer(400, '{"error": "bad_request"}'), FatalError, None),
    ("401 wrong token", wrong_token, ConfigurationError, None),
    ("403", answer(403, '{"error": "forbidden"}'), ConfigurationError, None),
    ("404 wrong path", wrong_paths, FatalError, None),
    ("422", answer(422, '{"error": "unprocessable"}'), FatalError, None),
    ("connection dropped", fault(Fault.DROP), TransientError, None),
    ("read timeout", fault(Fault.TIMEOUT), TransientError, None),
    ("connection refused", stopped, TransientError, None),
    ("200 but not JSON", answer(200, "<html>维护中</html>", **{"Content-Type": "text/html"}), FatalError, None),
    ("200 JSON of the wrong shape", answer(200, '{"unexpected": [1, 2]}'), FatalError, None),
    ("200 with a damaged gzip body", answer(200, "not gzip at all", **{"Content-Encoding": "gzip"}), TransientError,
     None),
    ("200 in a charset nobody knows", answer(200, "{}", **{"Content-Type": "application/json; charset=x-nonsuch"}),
     FatalError, None),
]


def _operate(adapter: RestAdapter, operation: str) -> object:
    if operation == "fetch":
        return adapter.fetch(Cursor(position=0))
    return adapter.deliver([MESSAGE])


@pytest.mark.parametrize("code", ["SCJG", "GAFJ", "JJZD"])
@pytest.mark.parametrize("operation", ["fetch", "deliver"])
@pytest.mark.parametrize(("arrange", "kind", "retry_after"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_error_table(code: str, operation: str, arrange, kind: type[HubError], retry_after) -> None:
    agency = start_rest_agency(code, timeout_sleep=2.0, retry_after="7")
    agency.book.add_penalty(subject_name="天津甲公司", uscc="914403001922038216")
    try:
        changes = arrange(agency)
        spec = load_registry(overrides={code: {"endpoint": agency.endpoint}})[code]
        spec = spec.model_copy(update={"transport": {**spec.transport, **changes.get("transport", {})}})
        context = AdapterContext(work_dir=Path("."), secret=changes.get("secret", agency.token),
                                 connect_timeout=2.0, read_timeout=READ_TIMEOUT)  # fmt: skip
        with closing(build_adapter(spec, context)) as adapter, pytest.raises(HubError) as raised:
            _operate(adapter, operation)
    finally:
        agency.stop()
    assert type(raised.value) is kind, f"{type(raised.value).__name__}: {raised.value}"
    assert code in str(raised.value)
    if isinstance(retry_after, tuple):
        assert retry_after[0] <= raised.value.retry_after <= retry_after[1]
    elif kind is TransientError:
        assert raised.value.retry_after == retry_after


def test_a_page_size_the_agency_refuses_is_fatal() -> None:
    agency = start_rest_agency("JJZD")
    try:
        spec = load_registry(overrides={"JJZD": {"endpoint": agency.endpoint}})["JJZD"]
        spec = spec.model_copy(update={"transport": {**spec.transport, "page_size": 5000}})
        with closing(build_adapter(spec, AdapterContext(work_dir=Path(".")))) as adapter:
            with pytest.raises(FatalError, match="HTTP 400"):
                adapter.fetch(Cursor())
    finally:
        agency.stop()


def test_errors_survive_pickling_with_their_retry_hint() -> None:
    import pickle

    agency = start_rest_agency("GAFJ", retry_after="11")
    agency.book.inject(Fault.RATE_LIMIT)
    try:
        spec = load_registry(overrides={"GAFJ": {"endpoint": agency.endpoint}})["GAFJ"]
        with closing(build_adapter(spec, AdapterContext(work_dir=Path(".")))) as adapter:
            with pytest.raises(TransientError) as raised:
                adapter.fetch(Cursor())
    finally:
        agency.stop()
    copy = pickle.loads(pickle.dumps(raised.value))
    assert type(copy) is TransientError and copy.retry_after == 11.0 and str(copy) == str(raised.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), (" 2.5 ", 2.5), ("-3", 0.0), ("soon", None), ("", None), (None, None),
     ("Wed, 21 Oct 2026 07:28:00 GMT", 60.0), ("Wed, 21 Oct 2026 07:26:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_header(header: str | None, expected: float | None) -> None:
    now = dt.datetime(2026, 10, 21, 7, 27, tzinfo=dt.UTC)
    assert retry_after_seconds(header, now=now) == expected


# --- TLS: a certificate the hub cannot verify is a configuration problem -----------------
def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "agency.pem", tmp_path / "agency.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def test_https_agency_verified_by_its_ca_and_refused_without_it(tmp_path: Path) -> None:
    cert_path, key_path = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    agency = start_rest_agency("JJZD", ssl_context=server_context)
    agency.book.add_penalty(subject_name="天津甲公司", uscc="914403001922038216")
    try:
        assert agency.endpoint.startswith("https://127.0.0.1:")
        spec = load_registry(overrides={"JJZD": {"endpoint": agency.endpoint}})["JJZD"]
        trusting = AdapterContext(work_dir=tmp_path, tls=_tls(ca=cert_path))
        with closing(build_adapter(spec, trusting)) as adapter:
            assert len(adapter.fetch(Cursor()).records) == 1
        with closing(build_adapter(spec, AdapterContext(work_dir=tmp_path))) as adapter:
            with pytest.raises(ConfigurationError, match="TLS"):
                adapter.fetch(Cursor())
    finally:
        agency.stop()


def _tls(**paths: Path):
    from adapters import TlsFiles

    return TlsFiles(**paths)


def test_a_port_nobody_listens_on_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = load_registry(overrides={"GAFJ": {"endpoint": f"http://127.0.0.1:{port}"}})["GAFJ"]
    with closing(build_adapter(spec, AdapterContext(work_dir=Path("."), connect_timeout=1.0))) as adapter:
        with pytest.raises(TransientError, match="connection"):
            adapter.fetch(Cursor())
        assert not adapter.probe().ok


def test_a_next_cursor_longer_than_the_hub_keeps_is_refused_before_the_page_is_stored() -> None:
    agency = start_rest_agency("SCJG")
    agency.queue_response(200, {"data": [], "hasMore": False, "nextCursor": "c" * 2001})
    try:
        spec = load_registry(overrides={"SCJG": {"endpoint": agency.endpoint}})["SCJG"]
        with closing(build_adapter(spec, AdapterContext(work_dir=Path("."), secret=agency.token))) as adapter:
            with pytest.raises(FatalError, match="next cursor is 2001 characters long; the hub keeps 2000"):
                adapter.fetch(Cursor())
    finally:
        agency.stop()


@pytest.mark.parametrize("token", ["s3cret\nX-Injected: 1", "s3cret token", "s3cret令牌"])
def test_a_token_no_header_can_carry_is_refused_naming_where_it_came_from_never_quoting_it(token):
    spec = load_registry()["SCJG"]
    assert spec.transport["auth"] == "bearer"
    with pytest.raises(ConfigurationError) as raised:
        build_adapter(spec, AdapterContext(work_dir=Path("."), secret=token))
    message = str(raised.value)
    assert f"agency SCJG: its token (credentials {spec.credentials})" in message and "s3cret" not in message
    assert raised.value.__cause__ is None and raised.value.__context__ is None  # nothing chained holds it either
