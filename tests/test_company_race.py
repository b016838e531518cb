"""Two pulls meeting the same new company at once both succeed, and it is created once."""

from __future__ import annotations

import threading

from sqlmodel import Session, func, select

from hub.db import session_scope
from hub.models import Company, Violation
from hub.violations import store_violations
from tests.test_storage import violation


def test_concurrent_pulls_create_a_new_company_once(engine):
    first_written, errors = threading.Event(), []
    release_first = threading.Event()

    def pull(agency: str, hold: bool) -> None:
        try:
            with session_scope(engine) as session:
                store_violations(session, [violation(f"{agency}-1", source_agency=agency)])
                if hold:  # keep the transaction open so the other pull meets the uncommitted company
                    first_written.set()
                    release_first.wait(10)
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    first = threading.Thread(target=pull, args=("SCJG", True))
    first.start()
    first_written.wait(10)
    second = threading.Thread(target=pull, args=("GSJ", False))
    second.start()
    second.join(0.5)  # blocked: on the company's row (PostgreSQL) or the write lock (SQLite)
    release_first.set()
    first.join(10)
    second.join(10)
    assert errors == []
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Company)).one() == 1
        owners = set(session.exec(select(Violation.company_id)).all())
    assert len(owners) == 1 and None not in owners
