"""Licence intake: whole-file refusal with named problems, --skip-invalid, encodings, routing, idempotency."""

from __future__ import annotations

import csv
import io
import os

import pytest
from sqlmodel import Session, func, select

from contracts.registry import load_registry
from hub.db import session_scope
from hub.errors import ContractViolation, RefusedInput
from hub.intake import import_licences, read_licence_file
from hub.models import Company, Delivery, DeliveryState, Licence, LicenceRevision, QuarantinedRecord
from tests.helpers import grant, run_hub, write_jsonl

BAD_USCC = "914403001922038217"  # check digit should be 6


def _counts(engine) -> dict:
    with Session(engine) as s:
        return {m.__name__: s.exec(select(func.count()).select_from(m)).one()
                for m in (Company, Licence, LicenceRevision, Delivery, QuarantinedRecord)}  # fmt: skip


def _import(engine, path, **kw):
    records = read_licence_file(path, encoding=kw.pop("encoding", None))
    with session_scope(engine) as session:
        return import_licences(session, records, load_registry(), actor="test", **kw)


def test_invalid_record_refuses_the_whole_file_and_names_record_field_reason(engine, tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [grant(1), grant(2), grant(3, XK_XDR_SHXYM=BAD_USCC), grant(4)])
    before = _counts(engine)
    with pytest.raises(ContractViolation) as caught:
        _import(engine, path)
    (problem,) = caught.value.problems
    assert (problem.record, problem.field) == ("3", "XK_XDR_SHXYM")
    assert "position 18" in problem.reason
    assert _counts(engine) == before


def test_skip_invalid_imports_the_rest_and_quarantines_the_bad_one(engine, tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [grant(1), grant(2), grant(3, XK_XDR_SHXYM=BAD_USCC), grant(4)])
    result = _import(engine, path, skip_invalid=True)
    assert (result.created, result.quarantined) == (3, 1)
    with Session(engine) as s:
        (q,) = s.exec(select(QuarantinedRecord)).all()
        assert q.record_ref == "g.jsonl record 3" and q.reasons[0]["field"] == "XK_XDR_SHXYM"
        assert BAD_USCC in q.raw


def test_every_problem_of_every_record_is_listed(engine, tmp_path):
    records = [grant(1, XK_JDRQ="2026-02-30"), grant(2, XK_XKLB="许可"), grant(3, XK_WSH=None)]
    path = write_jsonl(tmp_path / "g.jsonl", records)
    with pytest.raises(ContractViolation) as caught:
        _import(engine, path)
    found = {(p.record, p.field) for p in caught.value.problems}
    assert found == {("1", "XK_JDRQ"), ("2", "XK_XKLB"), ("3", "XK_WSH")}


def test_reimport_changes_nothing(engine, tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [grant(1), grant(2)])
    _import(engine, path)
    before = _counts(engine)
    result = _import(engine, path)
    assert (result.created, result.changed, result.unchanged, result.deliveries) == (0, 0, 2, 0)
    assert _counts(engine) == before


def test_grant_creates_deliveries_by_routing_and_a_change_supersedes_them(engine, tmp_path):
    registry = load_registry()
    path = write_jsonl(tmp_path / "g.jsonl", [grant(1)])
    first = _import(engine, path)
    assert first.deliveries >= 1
    revoked = grant(1, lifecycle="revoked", lifecycle_date="2026-06-01", lifecycle_reason="以欺骗手段取得许可")
    second = _import(engine, write_jsonl(tmp_path / "r.jsonl", [revoked]))
    assert second.changed == 1
    with Session(engine) as s:
        states = sorted((d.agency_code, d.state) for d in s.exec(select(Delivery)).all())
        revisions = s.exec(select(LicenceRevision.lifecycle).order_by(LicenceRevision.version)).all()
    routed = sorted(c for c in registry if any(a == c for a, _ in states))
    assert revisions == ["granted", "revoked"]
    for code in routed:
        assert (code, DeliveryState.SUPERSEDED) in states and (code, DeliveryState.PENDING) in states


REVOKED = {"lifecycle": "revoked", "lifecycle_date": "2026-06-01", "lifecycle_reason": "以欺骗手段取得许可"}


def test_an_old_file_imported_again_after_a_revocation_changes_nothing_and_the_revocation_still_goes_out(engine,
                                                                                                          tmp_path):
    granted = write_jsonl(tmp_path / "g.jsonl", [grant(1)])
    _import(engine, granted)
    _import(engine, write_jsonl(tmp_path / "r.jsonl", [grant(1, **REVOKED)]))

    again = _import(engine, granted)

    assert (again.created, again.changed, again.unchanged, again.deliveries) == (0, 0, 1, 0)
    with Session(engine) as s:
        assert s.exec(select(Licence.lifecycle)).one() == "revoked"
        pending = s.exec(select(LicenceRevision.lifecycle).join(Delivery, Delivery.revision_id == LicenceRevision.id)
                         .where(Delivery.state == DeliveryState.PENDING)).all()  # fmt: skip
    assert pending and set(pending) == {"revoked"}


def test_a_grant_cannot_bring_a_revoked_licence_back_and_nothing_is_written(engine, tmp_path):
    _import(engine, write_jsonl(tmp_path / "g.jsonl", [grant(1)]))
    _import(engine, write_jsonl(tmp_path / "r.jsonl", [grant(1, **REVOKED)]))
    before = _counts(engine)
    revived = grant(1, XK_NR="热食类食品制售（恢复）")

    with pytest.raises(ContractViolation) as refused:
        _import(engine, write_jsonl(tmp_path / "again.jsonl", [grant(2), revived]))

    (problem,) = refused.value.problems
    assert (problem.record, problem.field) == (revived["XK_WSH"], "lifecycle")
    assert "the licence was revoked (version 2)" in problem.reason
    assert _counts(engine) == before  # grant 2 of the same file neither


def test_skip_invalid_quarantines_a_revival_and_records_the_rest(engine, tmp_path):
    _import(engine, write_jsonl(tmp_path / "g.jsonl", [grant(1)]))
    _import(engine, write_jsonl(tmp_path / "r.jsonl", [grant(1, **REVOKED)]))
    revived = grant(1, XK_NR="热食类食品制售（恢复）")

    result = _import(engine, write_jsonl(tmp_path / "again.jsonl", [grant(2), revived]), skip_invalid=True)

    assert (result.created, result.changed, result.quarantined) == (1, 0, 1)
    with Session(engine) as s:
        (held,) = s.exec(select(QuarantinedRecord)).all()
        assert s.exec(select(Licence.lifecycle).where(Licence.decision_no == revived["XK_WSH"])).one() == "revoked"
    assert held.record_ref == "again.jsonl record 2" and held.reasons[0]["field"] == "lifecycle"


def test_a_change_reaches_every_agency_the_licence_went_to_though_it_no_longer_routes_there(engine, tmp_path):
    _import(engine, write_jsonl(tmp_path / "g.jsonl", [grant(1)]))  # 餐饮: the fire brigade gets it by industry
    no_industry = {k: v for k, v in grant(1, **REVOKED).items() if k != "industry"}
    _import(engine, write_jsonl(tmp_path / "r.jsonl", [no_industry]))
    with Session(engine) as s:
        told = {(d.agency_code, v) for d, v in s.exec(select(Delivery, LicenceRevision.lifecycle)
                                                       .join(LicenceRevision, Delivery.revision_id == LicenceRevision.id))}  # fmt: skip
    assert ("XFZD", "granted") in told and ("XFZD", "revoked") in told


def _csv_bytes(records: list[dict], encoding: str) -> bytes:
    columns = sorted({k for r in records for k in r})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode(encoding)


def test_gbk_csv_stores_the_same_records_as_utf8(tmp_path):
    from hub.db import create_db_engine, migrate

    records = [grant(1), grant(2, XK_XDR_MC="天津市南开区鑫磊餐饮管理有限公司", XK_NR="冷食类、生食类食品制售")]
    stored = []
    for encoding in ("utf-8", "gbk"):
        path = tmp_path / f"g-{encoding}.csv"
        path.write_bytes(_csv_bytes(records, encoding))
        eng = create_db_engine(f"sqlite:///{tmp_path / encoding}.sqlite3")
        migrate(eng)
        _import(eng, path)  # encoding detected
        with Session(eng) as s:
            stored.append(sorted((lic.decision_no, lic.digest, lic.payload["XK_XDR_MC"]) for lic in s.exec(select(Licence))))
        eng.dispose()
    assert stored[0] == stored[1]
    assert stored[0][1][2] == "天津市南开区鑫磊餐饮管理有限公司"


def test_a_utf8_bom_is_no_part_of_the_first_column_whether_the_encoding_is_given_or_detected(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv_bytes([grant(1)], "utf-8"))
    for encoding in (None, "utf-8", "UTF8"):
        (record,) = read_licence_file(path, encoding=encoding)
        assert record.data["XK_XDR_MC"] == grant(1)["XK_XDR_MC"] and not any(k.startswith("\ufeff") for k in record.data)


def test_a_line_separator_inside_a_jsonl_string_is_text_not_the_end_of_a_record(tmp_path):
    pasted = "热食类食品制售\u2028冷食类食品制售\x85（含网络经营）"  # JSON writes these unescaped
    path = write_jsonl(tmp_path / "g.jsonl", [grant(1, XK_NR=pasted), grant(2)])
    records = read_licence_file(path)
    assert [r.data["XK_NR"] for r in records] == [pasted, grant(2)["XK_NR"]]


def test_malformed_bytes_are_refused_with_their_offset(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"XK_XDR_MC\n\xff\xfe\xfd\n")
    with pytest.raises(RefusedInput, match="byte"):
        read_licence_file(path, encoding="utf-8")


def _file_counts(path) -> dict[str, int]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - our own table names
                for t in ("companies", "licences", "licence_revisions", "deliveries", "quarantine", "audit_log")}


def test_cli_refuses_record_3_and_leaves_the_database_as_it_was(tmp_path):
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path / "data")}
    good = write_jsonl(tmp_path / "good.jsonl", [grant(10)])
    assert run_hub("licences", "import", str(good), env=env).returncode == 0
    before = _file_counts(tmp_path / "data" / "hub.sqlite3")
    bad = write_jsonl(tmp_path / "bad.jsonl", [grant(1), grant(2), grant(3, XK_XDR_SHXYM=BAD_USCC)])
    proc = run_hub("licences", "import", str(bad), env=env)
    assert proc.returncode != 0
    assert "record 3: XK_XDR_SHXYM:" in proc.stderr and "check digit" in proc.stderr
    assert _file_counts(tmp_path / "data" / "hub.sqlite3") == before  # not records 1 and 2 either, nor an entry
    skip = run_hub("licences", "import", str(bad), "--skip-invalid", env=env)
    assert skip.returncode == 0 and "1 quarantined" in skip.stdout, skip.stderr
    assert run_hub("history", grant(10)["XK_XDR_SHXYM"], env=env).returncode == 0  # the first import's data intact
