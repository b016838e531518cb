"""All seven simulated agencies of the Nankai case, started together on loopback.

REST: 市场监管局 SCJG (cursor pages), 公安分局 GAFJ (offset), 交警支队 JJZD (page numbers).
SOAP: 国税局 GSJ, 地税局 DSJ. File drops: 消防支队 XFZD (GBK CSV over SFTP), 规划分局 GHFJ (XML on a share).

JJZD and GSJ demand mutual TLS (their data files have a ``[tls]`` table and https endpoints).
Given a PKI directory they serve HTTPS with the PKI's agency server certificate and refuse any
client without a certificate from the PKI's CA; without one they speak plain HTTP and the
hub is told (through the overrides) not to present certificates to them.

DSJ demands WS-Security (WSSE_CODES: a ``[soap.wsse]`` table, a credentials reference for the
UsernameToken's password, the agency's signing certificate in ``[tls]``). Given a PKI it
trusts the PKI's hub signing certificate, signs its answers with its own signing key, and the
generated password is handed over in ``env``; without one it checks nothing and the hub is
told (through the overrides) not to sign and to need no password.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.core import AgencyBook
from sandbox.filedrop_agencies import DIALECTS as DROP_DIALECTS
from sandbox.filedrop_agencies import start_filedrop_agency
from sandbox.rest_agencies import start_rest_agency
from sandbox.soap_agencies import start_soap_agency

__all__ = ["ALL_AGENCIES", "MTLS_CODES", "WSSE_CODES", "Sandbox", "start_sandbox"]

REST_CODES = ("SCJG", "GAFJ", "JJZD")
SOAP_CODES = ("GSJ", "DSJ")
DROP_CODES = ("XFZD", "GHFJ")
ALL_AGENCIES = REST_CODES + SOAP_CODES + DROP_CODES
MTLS_CODES = ("JJZD", "GSJ")  # their data files demand mutual TLS
WSSE_CODES = ("DSJ",)  # its data file demands WS-Security
WSSE_USERNAME = "shenguan-hub"  # what dsj.toml's [soap.wsse] names
_TRANSPORT_TLS_KEYS = ("ca", "client_cert", "client_key")
ABBREVIATIONS = {"SCJG": "市监", "GAFJ": "公", "JJZD": "公交", "GSJ": "国税", "DSJ": "地税", "XFZD": "消", "GHFJ": "规"}


@dataclass
class Sandbox:
    """Running agencies, and what the hub needs to reach them (endpoint overrides, credentials)."""

    agencies: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def books(self) -> dict[str, AgencyBook]:
        return {code: agency.book for code, agency in self.agencies.items()}

    def stop(self) -> None:
        for agency in self.agencies.values():
            agency.stop()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_sandbox(root: Path, *, codes: Iterable[str] = ALL_AGENCIES, seed: int = 7,
                  clean_companies: Iterable[str] = (), malformed_every: int = 7,
                  ports: dict[str, int] | None = None, pki_dir: Path | None = None) -> Sandbox:  # fmt: skip
    """Start the chosen agencies; file drops live under ``root``.

    Args:
        root: a directory for the file-drop shares and the SFTP key.
        codes: which agencies to start (all seven by default).
        seed: makes every agency's invented penalties the same on every run.
        clean_companies: USCCs no agency ever penalises (e.g. the demo's clean company).
        malformed_every: every n-th invented penalty is malformed (0: none).
        ports: fixed ports by code (0 or missing: ephemeral).
        pki_dir: a PKI made by ``certs.pki.init_pki`` with the agencies as parties. When given,
            the mTLS agencies (MTLS_CODES) serve HTTPS with their server certificate and
            require a client certificate from its CA, and the WS-Security agencies (WSSE_CODES)
            demand a UsernameToken and the hub's signature (their password goes in ``env``);
            when None they speak plain HTTP without WS-Security.

    Raises:
        ConfigurationError: ``pki_dir`` lacks an mTLS agency's server certificate or the CA.
    """
    clean = frozenset(clean_companies)
    ports = ports or {}
    sandbox = Sandbox(agencies={})
    try:
        for code in codes:
            # each front-end builds its agency's book from its own dialect; the sandbox adds only the run's options
            book_options = {"seed": seed, "clean_companies": clean, "malformed_every": malformed_every,
                            "abbreviation": ABBREVIATIONS.get(code, "")}  # fmt: skip
            if code in REST_CODES:
                agency = start_rest_agency(code, port=ports.get(code, 0), ssl_context=_server_context(code, pki_dir),
                                           **book_options)  # fmt: skip
                sandbox.overrides[code] = {"endpoint": agency.endpoint, **_tls_override(code, pki_dir)}
                if agency.token:
                    sandbox.env[f"HUB_{code}_TOKEN"] = agency.token
            elif code in SOAP_CODES:
                security, password = _wsse(code, pki_dir)
                agency = start_soap_agency(code, port=ports.get(code, 0), security=security,
                                           ssl_context=_server_context(code, pki_dir), **book_options)  # fmt: skip
                sandbox.overrides[code] = {"endpoint": agency.endpoint, **_tls_override(code, pki_dir),
                                           **_wsse_override(code, pki_dir)}  # fmt: skip
                if password:
                    sandbox.env[f"HUB_{code}_WSSE_PASSWORD"] = password
            elif code in DROP_CODES:
                d = DROP_DIALECTS[code]
                # start_filedrop_agency takes no book options: its default book is built here instead
                book = AgencyBook(code=code, name=d.name, uscc=d.uscc, subject_fields=d.subject_fields, **book_options)
                agency = start_filedrop_agency(code, root=Path(root) / code.lower(), book=book, auto_publish=True)
                overrides = agency.transport_overrides(_transport_table(code))
                if agency.client_key_file:
                    # the data file's credentials reference names the key; no key_file beside it
                    overrides["transport"].pop("key_file", None)
                    sandbox.env[f"HUB_{code}_SFTP_KEY"] = str(agency.client_key_file)
                sandbox.overrides[code] = overrides
            else:
                raise ValueError(f"no sandbox agency {code!r}; known: {', '.join(ALL_AGENCIES)}")
            sandbox.agencies[code] = agency
    except BaseException:
        sandbox.stop()
        raise
    return sandbox


def _server_context(code: str, pki_dir: Path | None):
    """The agency's mTLS server context, or None (plain HTTP) without a PKI or for other agencies."""
    if pki_dir is None or code not in MTLS_CODES:
        return None
    from certs.pki import PkiLayout
    from certs.tls import server_ssl_context

    layout = PkiLayout(Path(pki_dir))
    files = layout.party(code)
    return server_ssl_context(files.server_cert, files.server_key, client_ca=layout.ca_cert,
                              require_client_cert=True)  # fmt: skip


def _tls_override(code: str, pki_dir: Path | None) -> dict[str, Any]:
    """Without a PKI, the hub must not present certificates to a plain-HTTP mTLS agency.

    Only the transport references are dropped; others in the table (e.g. the agency's signing
    certificate for WS-Security) are kept.
    """
    if pki_dir is not None or code not in MTLS_CODES:
        return {}
    table = {k: v for k, v in _agency_table(code, "tls").items() if k not in _TRANSPORT_TLS_KEYS}
    return {"tls": table or None}


def _wsse(code: str, pki_dir: Path | None) -> tuple[Any, str | None]:
    """The agency's WS-Security policy and the password it expects, or (None, None)."""
    if pki_dir is None or code not in WSSE_CODES:
        return None, None
    from sandbox.soap_wsse import agency_wsse_from_pki

    password = secrets.token_urlsafe(18)  # a fresh one per run: nothing to leak from the repo
    return agency_wsse_from_pki(Path(pki_dir), code, username=WSSE_USERNAME, password=password), password


def _wsse_override(code: str, pki_dir: Path | None) -> dict[str, Any]:
    """Without a PKI, the hub must neither sign for nor send a password to a plain WS-Security agency.

    Overrides replace whole top-level keys, so the ``[soap]`` table is copied minus ``wsse``; the
    credentials reference and the ``[tls]`` table (only the agency's signing certificate) go.
    """
    if pki_dir is not None or code not in WSSE_CODES:
        return {}
    transport = {k: v for k, v in _agency_table(code, "soap").items() if k != "wsse"}
    return {"transport": transport, "credentials": None, "tls": None}


def _agency_table(code: str, name: str) -> dict[str, Any]:
    from contracts.registry import AGENCIES_DIR
    import tomllib

    data = tomllib.loads((AGENCIES_DIR / f"{code.lower()}.toml").read_text(encoding="utf-8"))
    return dict(data.get(name, {}))


def _transport_table(code: str) -> dict[str, Any]:
    """The [filedrop] table of the agency's data file, so overrides add keys instead of replacing it."""
    return _agency_table(code, "filedrop")


def main() -> None:  # pragma: no cover - manual use: `python -m sandbox.cluster /tmp/sandbox`
    parser = argparse.ArgumentParser(description="Run the seven sandbox agencies on 127.0.0.1")
    parser.add_argument("root", type=Path)
    parser.add_argument("--pki", type=Path, default=None, help="PKI dir (hub certs init): JJZD/GSJ speak mTLS")
    args = parser.parse_args()
    with start_sandbox(args.root, pki_dir=args.pki) as sandbox:
        print(json.dumps({"overrides": sandbox.overrides, "env": sandbox.env}, ensure_ascii=False, indent=2))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        stop.wait()


if __name__ == "__main__":  # pragma: no cover
    main()
