"""`hub quarantine retry` for pulled records: the cursor has moved past them, so after the agency's mapping
is fixed the stored raw record is the only way back; a corrected record sent again releases the old row."""

from __future__ import annotations

import copy
import json

from sqlmodel import Session, select
from typer.testing import CliRunner

from hub.cli import app
from hub.evidence import export_evidence
from hub.jobs import pull_job
from hub.models import AuditEntry, QuarantinedRecord, Violation
from tests.helpers import make_uscc
from tests.sync.support import agency_table, write_agency_files


def _env(db_url: str, tmp_path, agencies_dir) -> dict[str, str]:
    return {"HUB_DATABASE_URL": db_url, "HUB_DATA_DIR": str(tmp_path / "var"), "HUB_PKI_DIR": str(tmp_path / "no-pki"),
            "HUB_AGENCIES_DIR": str(agencies_dir), "USER": "op.zhang"}  # fmt: skip


def _hub(env: dict, *args: str):
    return CliRunner().invoke(app, list(args), env=env)


def _rows(engine) -> list[QuarantinedRecord]:
    with Session(engine) as s:
        return list(s.exec(select(QuarantinedRecord).order_by(QuarantinedRecord.id)).all())


def _mapping(**fields: str) -> dict:
    mapping = copy.deepcopy(agency_table("SCJG")["violation_mapping"])
    mapping["fields"].update(fields)
    return mapping


def test_a_pulled_record_is_retried_after_its_mapping_is_fixed(db_url, tmp_path, make_runtime, start_agency):
    agency = start_agency("SCJG")
    uscc = make_uscc(7301)
    penalty = agency.book.add_penalty(subject_name="天津重试测试有限公司", uscc=uscc)
    agencies = tmp_path / "agencies"
    # the agency renamed its decision-number field; our file still names the old one
    write_agency_files(agencies, {"SCJG": {"endpoint": agency.endpoint,
                                           "violation_mapping": _mapping(CF_WSH="penDecNoOld")}})  # fmt: skip
    runtime = make_runtime(db_url, {}, agencies_dir=agencies)
    assert pull_job(runtime, "SCJG")["pull"]["quarantined"] == 1
    assert pull_job(runtime, "SCJG")["pull"]["quarantined"] == 0  # the cursor has moved past it for good
    (row,) = _rows(runtime.engine)
    assert (row.source, row.agency_code, row.record_ref) == ("pull", "SCJG", penalty.record_id)
    assert "CF_WSH" in {r["field"] for r in row.reasons}
    env = _env(db_url, tmp_path, agencies)

    # a fix that is not one: the retry says what is wrong now, and the row stays open with it
    write_agency_files(agencies, {"SCJG": {"endpoint": agency.endpoint,
                                           "violation_mapping": _mapping(CF_XDR_MC="entNameOld")}})  # fmt: skip
    wrong = _hub(env, "quarantine", "retry", "--agency", "SCJG")
    assert wrong.exit_code == 1 and f"{row.id}" in wrong.stdout and "refused" in wrong.stdout
    (row,) = _rows(runtime.engine)
    assert row.released_at is None and {r["field"] for r in row.reasons} == {"CF_XDR_MC"}

    write_agency_files(agencies, {"SCJG": {"endpoint": agency.endpoint, "violation_mapping": _mapping()}})
    fixed = _hub(env, "quarantine", "retry", str(row.id))
    assert fixed.exit_code == 0, fixed.output
    assert f"created SCJG record {penalty.record_id}" in fixed.stdout and "1 of 1 stored" in fixed.stdout
    (row,) = _rows(runtime.engine)
    assert row.released_at is not None and row.release_note.startswith("retried by cli:op.zhang: created")
    with Session(runtime.engine) as s:
        stored = s.exec(select(Violation).where(Violation.agency_record_id == penalty.record_id)).one()
        retries = s.exec(select(AuditEntry).where(AuditEntry.action == "quarantine.retry")
                         .order_by(AuditEntry.id)).all()  # fmt: skip
    assert stored.source_agency == "SCJG" and stored.uscc == uscc
    assert [(e.subject, e.detail["outcome"]) for e in retries][-1] == (f"quarantine:{row.id}",
                                                                      f"created SCJG record {penalty.record_id}")
    assert [e.detail["refs"] for e in retries] == [[], [penalty.record_id]]

    history = _hub(env, "history", uscc, "--json")
    assert history.exit_code == 0, history.output
    assert [v["agency"] for v in json.loads(history.stdout)["violations"]] == ["SCJG"]
    with Session(runtime.engine) as s:  # the record came in through the retry: the company's evidence says so
        export_evidence(s, tmp_path / "evidence", company=uscc)
    carried = [json.loads(line) for line in (tmp_path / "evidence" / "entries.jsonl").read_text().splitlines()]
    assert ("quarantine.retry", [penalty.record_id]) in [(e["action"], e["detail"].get("refs")) for e in carried]
    again = _hub(env, "quarantine", "retry", str(row.id))
    assert again.exit_code == 1 and "skipped" in again.stdout and "released already" in again.stdout
    assert _hub(env, "quarantine", "retry", "--all-open").stdout.strip() == "no open quarantined records"
    assert _hub(env, "quarantine", "retry").exit_code == 2


def test_a_corrected_pulled_record_releases_its_refused_version(db_url, tmp_path, make_runtime, start_agency):
    """The agency sends the record again, corrected: the pull stores it and the old row is released."""
    agency = start_agency("SCJG")
    penalty = agency.book.add_penalty(subject_name="天津更正测试有限公司", uscc=make_uscc(7302), decision_no="")
    runtime = make_runtime(db_url, {"SCJG": {"endpoint": agency.endpoint}})
    assert pull_job(runtime, "SCJG")["pull"]["quarantined"] == 1
    # the same agency record again, its decision number filled in
    agency.book.add_penalty(subject_name="天津更正测试有限公司", uscc=make_uscc(7302), record_id=penalty.record_id)
    assert pull_job(runtime, "SCJG")["pull"]["created"] == 1
    (row,) = _rows(runtime.engine)
    assert row.released_at is not None and row.release_note.startswith("superseded")
