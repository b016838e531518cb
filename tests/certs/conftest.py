"""A development PKI made at test time (never committed), plus a second, unrelated one."""

from __future__ import annotations

import pytest

from certs.pki import PkiLayout, init_pki

from trust_data import PARTIES, T0


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PkiLayout:
    """Shared and read-only, issued at the real current time (OpenSSL checks TLS validity against it)."""
    return init_pki(tmp_path_factory.mktemp("pki") / "pki", parties=PARTIES)


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory) -> PkiLayout:
    """Same party codes, another CA: what an impostor could produce."""
    return init_pki(tmp_path_factory.mktemp("foreign") / "pki", parties=PARTIES)


@pytest.fixture
def fresh_pki(tmp_path) -> PkiLayout:
    """A private PKI issued at the fixed time T0, for tests that rotate, re-issue or travel in time."""
    return init_pki(tmp_path / "pki", parties=PARTIES, now=T0)
