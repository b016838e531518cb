"""Two writers of one agency's records at once (PostgreSQL): the second waits its turn, then reads the first's rows."""

from __future__ import annotations

import threading
import time

from sqlmodel import Session

from hub.submissions import submit_violations
from tests.review.review_seed import violation


def test_a_batch_resent_while_the_first_is_still_in_flight_is_answered_unchanged(pg_hub):
    uscc = pg_hub.grant(1)
    record = violation(uscc, "SCJG", "RACE-1")
    answers: list = []
    with pg_hub.client() as client, Session(pg_hub.engine) as first:
        submit_violations(first, spec=pg_hub.runtime.agency("SCJG"), records=[record], actor="regulator:scjg")
        resend = threading.Thread(target=lambda: answers.append(
            client.post("/api/v1/violations", json={"records": [record]}, headers=pg_hub.headers("scjg"))))
        resend.start()
        time.sleep(0.5)  # the resend is waiting on the first, not yet committed
        assert not answers
        first.commit()
        resend.join(30)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert [r["outcome"] for r in answer.json()["records"]] == ["unchanged"]
