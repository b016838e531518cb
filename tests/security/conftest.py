"""Trust fixtures: a development PKI made at test time (never committed), an impostor's one, and
the sandbox 消防支队 signing its drops and receipts with its certificate from the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.pki import PkiLayout, init_pki
from certs.sealer import DropSeal
from contracts.registry import load_registry
from hub.runtime import HubRuntime
from hub.settings import Settings
from sandbox.core import AgencyBook
from sandbox.filedrop_agencies import DIALECTS, start_filedrop_agency

XFZD, XFZD_CHUNK = "XFZD", 7
XFZD_SIGNED = {"seal": "sign", "chunk_records": XFZD_CHUNK, "receipt_timeout": 10, "poll_interval": 0.02,
               "incomplete_grace": 3600, "claim_stale_after": 3600}  # fmt: skip


def _parties() -> list[tuple[str, str]]:
    return [(spec.code, spec.name_zh) for spec in load_registry().values()]


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PkiLayout:
    """The hub's and every agency's certificates under one CA; shared and read-only."""
    return init_pki(tmp_path_factory.mktemp("pki") / "pki", parties=_parties())


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory) -> PkiLayout:
    """The same party names under another CA: what an impostor could produce."""
    return init_pki(tmp_path_factory.mktemp("foreign") / "pki", parties=_parties())


@pytest.fixture
def xfzd(tmp_path, pki, monkeypatch):
    """The signing sandbox XFZD, and a maker of hub runtimes reaching it (``agency_cert``: the one on
    file; ``filedrop``: settings over XFZD_SIGNED)."""
    d = DIALECTS[XFZD]
    book = AgencyBook(code=XFZD, name=d.name, uscc=d.uscc, subject_fields=d.subject_fields, malformed_every=0)
    running = start_filedrop_agency(XFZD, root=tmp_path / "share", book=book, key_dir=tmp_path / "keys",
                                    seal=DropSeal.from_pki(pki.root, own=XFZD, peer="hub", encrypt=False))  # fmt: skip
    monkeypatch.setenv("HUB_XFZD_SFTP_KEY", str(running.client_key_file))  # where xfzd.toml's reference looks
    made: list[HubRuntime] = []

    def hub(agency_cert: Path | None = None, **filedrop) -> HubRuntime:
        overrides = running.transport_overrides({**load_registry()[XFZD].transport, **XFZD_SIGNED, **filedrop})
        overrides["transport"].pop("key_file")
        overrides["tls"] = {"ca": "ca.pem", "agency_cert": str(agency_cert or pki.party(XFZD).signing_cert)}
        settings = Settings(data_dir=tmp_path / "hub", database_url=None, broker_url=None, pki_dir=pki.root)
        runtime = HubRuntime(settings, overrides={XFZD: overrides})
        runtime.init_database()
        made.append(runtime)
        return runtime

    yield running, hub
    for runtime in made:
        runtime.dispose()
    running.stop()
