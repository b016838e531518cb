"""What releases a quarantine row, and what a retry may write: never an older version over a newer one,
never a deadlock with a pull, the raw record read in the form it arrived in, one lookup per refused batch.
Records are refused by a broken SCJG mapping (the record id or decision number field renamed) and retried
with the fixed one, as an operator does after fixing contracts/agencies/scjg.toml."""

from __future__ import annotations

import csv
import io
import json
import threading
import time

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from typer.testing import CliRunner

from contracts.records import ViolationRecord
from contracts.registry import load_registry
from contracts.validation import parse_record
from hub.cli import app
from hub.db import create_db_engine, migrate, session_scope
from hub.intake import import_licences, read_licence_file
from hub.licences import ensure_agencies
from hub.models import QuarantinedRecord, Violation
from hub.quarantine import open_ids, retry
from hub.submissions import submit_violations
from hub.violations import store_violations
from tests.helpers import grant, make_uscc
from tests.test_contract_records import violation

BAD_USCC = "914403001922038217"  # check digit should be 6


def _native(rid: str, content: str = "罚款") -> dict:
    return {"penaltyId": rid, "entName": "天津测试公司", "subjectType": "LEGAL", "uniscid": make_uscc(5),
            "penDecNo": "津南市监罚〔2026〕1号", "illegActType": "无证经营", "illegFact": "现场检查",
            "penBasis": "《食品安全法》", "penType": "罚款", "penContent": content, "penAm": "5000",
            "penDecIssDate": "2026-01-05", "penValidTo": "2029-01-05"}  # fmt: skip


def _broken(**mapping) -> dict:
    """The registry with SCJG's mapping broken as ``mapping`` says (a renamed field)."""
    fixed = load_registry()
    spec = fixed["SCJG"]
    broken_mapping = spec.violation_mapping.model_copy(update=mapping)
    return {**fixed, "SCJG": spec.model_copy(update={"violation_mapping": broken_mapping})}


def _submit(engine, records: list[dict], *, registry=None, native: bool = True):
    registry = registry or load_registry()
    with session_scope(engine) as s:
        return submit_violations(s, spec=registry["SCJG"], records=records, actor="api:scjg", native=native)


def _rows(engine) -> list[QuarantinedRecord]:
    with Session(engine) as s:
        return list(s.exec(select(QuarantinedRecord).order_by(QuarantinedRecord.id)).all())


def _stored_content(engine, rid: str) -> str:
    with Session(engine) as s:
        return s.exec(select(Violation).where(Violation.agency_record_id == rid)).one().payload["CF_NR"]


@pytest.fixture
def hub_engine(engine):
    with session_scope(engine) as s:
        ensure_agencies(s, load_registry().values())
    return engine


# --- item 1: release_superseded releases only older rows; retry never goes backwards -----------------
def test_retrying_two_refused_versions_stores_the_later_one(hub_engine):
    broken = _broken(fields={**load_registry()["SCJG"].violation_mapping.fields, "CF_WSH": "penDecNoOld"})
    for content in ("v2", "v3 corrected"):
        _submit(hub_engine, [_native("R-1", content)], registry=broken)
    first, second = (r.id for r in _rows(hub_engine))
    with Session(hub_engine) as s:
        ids = open_ids(s)
    outcomes = retry(hub_engine, ids, load_registry(), actor="op")
    assert [(o.id, o.result) for o in outcomes] == [(first, "skipped"), (second, "stored")]
    assert f"quarantine {second}" in outcomes[0].detail
    assert _stored_content(hub_engine, "R-1") == "v3 corrected"
    older, later = _rows(hub_engine)
    assert older.release_note.startswith("superseded") and later.release_note.startswith("retried by op")


def test_a_later_version_refused_in_the_same_batch_stays_open(hub_engine):
    result = _submit(hub_engine, [violation(agency_record_id="R-1"),
                                  violation(agency_record_id="R-1", CF_CFLB=["打板子"], CF_NR="later")], native=False)
    assert [r.outcome for r in result.records] == ["created", "quarantined"]
    (row,) = _rows(hub_engine)
    assert row.released_at is None


def test_retry_never_writes_over_a_record_stored_after_the_row(hub_engine):
    # refused without a readable record id, so no key: the corrected record sent later cannot release it
    _submit(hub_engine, [_native("R-1", "old version")], registry=_broken(record_id="penaltyIdOld"))
    (row,) = _rows(hub_engine)
    assert row.record_ref == "item 0"
    _submit(hub_engine, [_native("R-1", "corrected version")])
    (outcome,) = retry(hub_engine, [row.id], load_registry(), actor="op")
    assert outcome.result == "skipped" and "a newer record was stored at" in outcome.detail
    assert "dismiss this row" in outcome.detail
    assert _stored_content(hub_engine, "R-1") == "corrected version"
    assert _rows(hub_engine)[0].released_at is None


# --- item 2: a retry and a pull of the same agency at once -----------------------------------------
def test_a_retry_while_a_pull_stores_the_corrected_record_neither_deadlocks_nor_fails(pg_url):
    engine = create_db_engine(pg_url)
    migrate(engine)
    try:
        registry = load_registry()
        with session_scope(engine) as s:
            ensure_agencies(s, registry.values())
        _submit(engine, [_native("R-1")], registry=_broken(fields={
            **registry["SCJG"].violation_mapping.fields, "CF_WSH": "penDecNoOld"}))  # fmt: skip
        (row,) = _rows(engine)

        def record(rid: str) -> ViolationRecord:
            return parse_record(ViolationRecord, {**violation(agency_record_id=rid), "source_agency": "SCJG"}, record=rid)

        out: dict = {}

        def operator() -> None:
            time.sleep(0.3)
            try:
                out["retry"] = retry(engine, [row.id], registry, actor="op")
            except Exception as exc:  # noqa: BLE001 - the point: nothing escapes retry()
                out["retry"] = exc

        thread = threading.Thread(target=operator)
        thread.start()
        with session_scope(engine) as s:  # a pull page of SCJG: the agency's turn taken first
            store_violations(s, [record("R-0")])
            time.sleep(1.0)  # meanwhile the retry starts
            store_violations(s, [record("R-1")])  # the corrected R-1 in the same page releases the row
        thread.join()
        (outcome,) = out["retry"]
        assert outcome.result == "skipped" and "released meanwhile" in outcome.detail
        assert _rows(engine)[0].release_note.startswith("superseded")
    finally:
        engine.dispose()


# --- item 3: the raw record read again in the form it arrived in -----------------------------------
def test_a_canonical_record_sent_by_field_names_is_retried_as_canonical(hub_engine):
    names = {f.alias: n for n, f in ViolationRecord.model_fields.items()}
    by_name = {names[k]: v for k, v in violation(agency_record_id="R-NAME", CF_CFLB=["打板子"]).items()}
    (refused,) = _submit(hub_engine, [by_name], native=False).records
    (row,) = _rows(hub_engine)
    assert row.raw_format == "canonical"
    (outcome,) = retry(hub_engine, [row.id], load_registry(), actor="op")
    assert outcome.result == "refused"
    assert [r["field"] for r in outcome.reasons] == [p["field"] for p in refused.problems]


def test_a_csv_imported_from_a_file_not_named_csv_is_retried_as_csv(hub_engine, tmp_path):
    g = {(k + " " if k == "XK_NR" else k): v for k, v in grant(1, XK_XDR_SHXYM=BAD_USCC).items()}  # a padded header
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(list(g))
    writer.writerow(list(g.values()))
    (tmp_path / "approvals.txt").write_text(buffer.getvalue(), encoding="utf-8")
    with session_scope(hub_engine) as s:
        import_licences(s, read_licence_file(tmp_path / "approvals.txt", fmt="csv"), load_registry(), actor="t",
                        skip_invalid=True)  # fmt: skip
    (row,) = _rows(hub_engine)
    assert row.raw_format == "csv"
    (outcome,) = retry(hub_engine, [row.id], load_registry(), actor="op")
    assert outcome.result == "refused" and [r["field"] for r in outcome.reasons] == ["XK_XDR_SHXYM"]


# --- item 4: migration 0006 gives old rows the keys and digests new rows get --------------------------
def test_migration_gives_repeat_rows_no_key_and_empty_raws_no_digest(db_url):
    engine = create_db_engine(db_url)
    try:
        migrate(engine, "0005")
        dup = grant(2, XK_WSH=grant(1)["XK_WSH"])
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO quarantine (source, agency_code, record_ref, reasons, raw, created_at) "
                              "VALUES (:source, :agency, :ref, :reasons, :raw, CURRENT_TIMESTAMP)"), [
                dict(source="intake", agency=None, ref="record 2", raw=json.dumps(dup, ensure_ascii=False),
                     reasons=json.dumps([{"field": "XK_WSH", "reason": "repeats record 1's decision number"}])),
                dict(source="intake", agency=None, ref="record 3", raw=json.dumps(grant(3), ensure_ascii=False),
                     reasons="[]"),
                dict(source="pull", agency="XFZD", ref="b-1", raw="", reasons="[]"),
            ])  # fmt: skip
        migrate(engine)
        repeat, plain, batch = _rows(engine)
        assert repeat.record_key is None and repeat.raw_digest is not None
        assert plain.record_key == f"licence:{grant(3)['XK_WSH']}"
        assert batch.raw_digest is None and batch.raw_format is None
    finally:
        engine.dispose()


# --- item 5: one lookup per refused batch; identical records one row -----------------------------
def test_a_refused_batch_is_looked_up_once_and_identical_records_share_a_row(hub_engine):
    bad = [violation(agency_record_id=f"BAD-{n}", CF_CFLB=["打板子"]) for n in range(40)]
    selects: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "quarantine" in statement:
            selects.append(statement)

    sa.event.listen(hub_engine, "before_cursor_execute", count)
    try:
        result = _submit(hub_engine, [*bad, bad[0]], native=False)
    finally:
        sa.event.remove(hub_engine, "before_cursor_execute", count)
    assert result.quarantined == 41 and [r.outcome for r in result.records] == ["quarantined"] * 41
    assert len(_rows(hub_engine)) == 40  # the record sent twice is one row
    assert len(selects) <= 2, selects  # the batch's digests, and (at most) the keys a stored record releases


# --- item 6: usage errors -------------------------------------------------------------------------
def test_cli_usage_errors_exit_2_and_an_unknown_agency_is_named(engine, tmp_path):
    env = {"HUB_DATABASE_URL": engine.url.render_as_string(hide_password=False), "HUB_DATA_DIR": str(tmp_path / "var"),
           "HUB_PKI_DIR": str(tmp_path / "no-pki"), "USER": "op.zhang"}  # fmt: skip
    for args in (["list", "--source", "email"], ["list", "--source", "filedrop"], ["dismiss", "1", "--reason", "  "]):
        assert CliRunner().invoke(app, ["quarantine", *args], env=env).exit_code == 2, args
    unknown = CliRunner().invoke(app, ["quarantine", "list", "--agency", "NOPE"], env=env)
    assert unknown.exit_code != 0 and "no agency 'NOPE'" in unknown.output
