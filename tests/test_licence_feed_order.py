"""A regulator's feed moves past the highest revision id it saw: on PostgreSQL, where ids are drawn
before commit, licence writers take turns so that no revision commits behind a higher one already
served (it would never be fed). SQLite's writers always take turns."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import Session

from contracts.records import LicenceGrant
from contracts.registry import load_registry
from hub.db import create_db_engine, migrate
from hub.errors import TransientError
from hub.feeds import licence_feed
from hub.licences import record_grants
from tests.helpers import grant


def _recorded_and_committed(engine, number: int) -> None:
    with Session(engine) as session:
        record_grants(session, [LicenceGrant.model_validate(grant(number))], load_registry(), actor="api:bureau")
        session.commit()


def test_a_licence_recorded_while_a_bigger_import_is_open_waits_and_the_feed_misses_neither(pg_url):
    engine = create_db_engine(pg_url)
    migrate(engine)
    try:
        big_import = Session(engine)
        record_grants(big_import, [LicenceGrant.model_validate(grant(1))], load_registry(), actor="cli:grants.jsonl")
        with ThreadPoolExecutor(1) as pool:
            posted = pool.submit(_recorded_and_committed, engine, 2)
            time.sleep(0.5)
            waiting = not posted.done()
            with Session(engine) as session:
                seen_meanwhile = licence_feed(session, agency="SCJG").items
            big_import.commit()
            big_import.close()
            posted.result(timeout=30)
        with Session(engine) as session:
            fed = licence_feed(session, agency="SCJG")
    finally:
        engine.dispose()
    assert waiting and seen_meanwhile == []
    assert [item.decision_no for item in fed.items] == [grant(1)["XK_WSH"], grant(2)["XK_WSH"]]


def test_a_writer_that_waits_too_long_for_its_turn_is_told_to_come_back_and_writes_nothing(pg_url):
    engine = create_db_engine(pg_url)
    migrate(engine)
    try:
        with Session(engine) as big_import, Session(engine) as posted:
            record_grants(big_import, [LicenceGrant.model_validate(grant(1))], load_registry(), actor="cli:big.jsonl")
            with pytest.raises(TransientError, match="another import is recording licences") as told:
                record_grants(posted, [LicenceGrant.model_validate(grant(2))], load_registry(), actor="api:bureau",
                              lock_wait=0.3)  # fmt: skip
            posted.rollback()
            big_import.commit()
        with Session(engine) as session:
            fed = licence_feed(session, agency="SCJG")
    finally:
        engine.dispose()
    assert told.value.retry_after == 60
    assert [item.decision_no for item in fed.items] == [grant(1)["XK_WSH"]]
