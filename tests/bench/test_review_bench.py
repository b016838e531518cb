"""Scenario 4 (reviewer queries): its dataset is one the hub would hold, and the tiny run exercises the API.

No timing is asserted: only that every side ran over the same companies and was reported.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import sqlalchemy as sa

from adapters.base import payload_digest
from bench.__main__ import main
from bench.bulkload import load_review_dataset, schema_fingerprint
from bench.synthetic import ReviewDataset, synthetic_uscc
from contracts.records import LicenceGrant, ViolationRecord
from hub.db import session_scope
from hub.history import HistoryFilter, company_history, find_company
from hub.violations import StoreOutcome, store_violation
from tests.test_storage import violation


def test_tiny_review_reports_in_process_and_http_rows_on_both_databases(tmp_path, pg_database_url):
    code = main(["--scale", "tiny", "--only", "review", "--out", str(tmp_path)])

    run = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    assert code == 0, run["not_run"]
    # set beside the rows: what HTTP alone costs, and the history endpoint's own work without HTTP
    references = [row for row in run["rows"] if row["target"] == "(reference)"]
    assert sorted((row["db"], row["title"]) for row in references) == [
        (db, title) for db in ("postgres", "sqlite")
        for title in ("reviewer history + its audit entry, in-process (the API endpoint's own work)",
                      "reviewer over HTTP, GET /healthz only (the floor)")]  # fmt: skip
    assert all(row["ratio"] and row["hub"]["records"] == run["sizes"]["queries"] for row in references)
    rows = [row for row in run["rows"] if row not in references]
    titles = {(row["db"], row["title"]) for row in rows}
    assert titles == {(db, f"reviewer {kind}{via}") for db in ("sqlite", "postgres") for kind in ("history", "check")
                      for via in ("", " over HTTP")}  # fmt: skip
    for row in rows:
        assert row["hub"]["records"] == row["baseline"]["records"] == run["sizes"]["queries"]
        assert row["hub"]["p99_ms"] is not None and row["ratio"] is not None
        assert row["hub"]["extra"]["via"] == ("http" if "HTTP" in row["title"] else "in-process")
        assert {"bound_met", "ratio_met"} <= set(row["hub"]["extra"])
    assert any("HTTP floor" in note for note in run["not_run"])
    assert "| 4 | reviewer check over HTTP | postgres |" in (tmp_path / "benchmarks.md").read_text(encoding="utf-8")


def test_the_bulk_load_keeps_the_migrated_schema_and_the_hub_reads_and_extends_it(engine):
    data = ReviewDataset(60)  # three blocks of 20 companies: exactly 2 licences and 5 violations each on average
    migrated = schema_fingerprint(engine)

    load_review_dataset(engine, data, quiet=True)

    assert schema_fingerprint(engine) == migrated
    assert (data.licences, data.violations) == (120, 300)
    with engine.connect() as conn:
        count = lambda sql: conn.execute(sa.text(sql)).scalar_one()  # noqa: E731
        assert [count(f"SELECT count(*) FROM {t}") for t in ("companies", "licences", "violations")] == [60, 120, 300]
        orphans = ("SELECT count(*) FROM {t} LEFT JOIN companies c ON c.id = {t}.company_id "
                   "WHERE c.id IS NULL")  # fmt: skip
        assert count(orphans.format(t="licences")) == count(orphans.format(t="violations")) == 0
    standings = Counter()
    with session_scope(engine) as session:
        for i in range(data.companies):
            history = company_history(session, find_company(session, data.usccs[i]), HistoryFilter(include_hidden=True))
            assert (len(history.licences), len(history.violations)) == data.counts(i)
            standings.update(v.standing.value for v in history.violations)
    assert set(standings) == {"counts", "expired", "repaired"}  # what a reviewer is shown, and what is hidden
    # a later pull stores new records next to the loaded ones: keys and sequences carry on
    with session_scope(engine) as session:
        record = violation("AFTER-LOAD", CF_XDR_SHXYM=synthetic_uscc(99_999_999), CF_XDR_MC="天津后来有限公司")
        outcome, row = store_violation(session, record)
        assert outcome == StoreOutcome.CREATED and row.id == data.violations + 1
        assert row.company_id == data.companies + 1


def test_the_generated_records_are_ones_the_hub_would_accept():
    data = ReviewDataset(40)
    violations, licences = list(data.violation_rows(0, data.violations)), list(data.licence_rows(0, data.licences))

    for rows, model, digest_at, payload_at in ((violations, ViolationRecord, 18, 19), (licences, LicenceGrant, 13, 14)):
        for row in rows:
            payload = json.loads(row[payload_at])
            assert model.model_validate(payload).model_dump(mode="json", by_alias=True, exclude_none=True) == payload
            assert row[digest_at] == payload_digest(payload)
    assert {row[9] for row in violations} == {"minor", "ordinary", "serious"}
    assert {row[15] for row in violations} >= {"none", "repaired"}
    assert {row[8] for row in licences} >= {"granted", "changed", "cancelled"}


def test_the_http_client_reconnects_once_when_the_server_dropped_an_idle_keep_alive_connection():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from bench.review import http_getter

    seen: list[tuple[str, str | None, int]] = []

    class DropsAfterEachAnswer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive is promised, then broken: what an idle timeout does

        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization"), self.client_address[1]))
            status = 200 if self.path.startswith("/ok") else 503
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), DropsAfterEachAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        get = http_getter(f"http://127.0.0.1:{server.server_address[1]}", "t0ken")
        get("/ok", case="A B")
        get("/ok/2")
        with pytest.raises(RuntimeError, match="503"):
            get("/down")
    finally:
        server.shutdown()
        server.server_close()
    assert [(path, auth) for path, auth, _ in seen] == [("/ok?case=A+B", "Bearer t0ken"), ("/ok/2", "Bearer t0ken"),
                                                         ("/down", "Bearer t0ken")]  # fmt: skip
    assert len({port for _, _, port in seen}) == 3  # each request after a drop went out on a new connection
