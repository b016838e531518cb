"""Trust fixtures: a development PKI made at test time (never committed), and an impostor's one."""

from __future__ import annotations

import pytest

from certs.pki import PkiLayout, init_pki
from contracts.registry import load_registry


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
