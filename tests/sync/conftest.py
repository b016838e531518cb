"""Fixtures for the sync tests: a hub runtime on a real database, sandbox REST agencies with gates."""

from __future__ import annotations

import pytest

from hub.runtime import HubRuntime
from hub.settings import Settings
from sandbox.rest_agencies import start_rest_agency
from tests.sync.support import gate_book


@pytest.fixture
def make_runtime(tmp_path):
    """Build a migrated HubRuntime on ``db_url`` with sandbox endpoint overrides."""
    made = []

    def build(db_url: str, overrides: dict, **settings) -> HubRuntime:
        runtime = HubRuntime(Settings(data_dir=tmp_path / "var", database_url=db_url, broker_url=None,
                                      pki_dir=tmp_path / "no-pki", **settings), overrides=overrides)  # fmt: skip
        runtime.init_database()
        made.append(runtime)
        return runtime

    yield build
    for runtime in made:
        runtime.dispose()


@pytest.fixture
def start_agency(monkeypatch):
    """Start REST sandbox agencies whose books have gates; their bearer tokens go in the environment."""
    running = []

    def start(code: str = "SCJG", **book_options):
        agency = start_rest_agency(code, book=gate_book(code, **book_options), timeout_sleep=1.0)
        if agency.token:
            monkeypatch.setenv(f"HUB_{code}_TOKEN", agency.token)
        running.append(agency)
        return agency

    yield start
    for agency in running:
        agency.book.release_all()
        agency.stop()
