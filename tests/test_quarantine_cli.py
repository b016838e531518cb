"""`hub quarantine`: list and show what the contract refused, retry it after the mapping is fixed, dismiss it;
an import refused twice is one row, a corrected record releases its refused version, status counts intake rejects.
Pulled records retried after a mapping fix: tests/sync/test_sync_quarantine.py."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from contracts.registry import load_registry
from hub.cli import app
from hub.db import session_scope
from hub.errors import RefusedInput
from hub.intake import import_licences, read_licence_file
from hub.models import AuditEntry, QuarantinedRecord
from hub.status import collect_status, render_text
from tests.helpers import grant, write_jsonl

BAD_USCC = "914403001922038217"  # check digit should be 6


def _env(db_url: str, tmp_path, agencies_dir=None) -> dict[str, str]:
    env = {"HUB_DATABASE_URL": db_url, "HUB_DATA_DIR": str(tmp_path / "var"), "HUB_PKI_DIR": str(tmp_path / "no-pki"),
           "USER": "op.zhang"}  # fmt: skip
    if agencies_dir is not None:
        env["HUB_AGENCIES_DIR"] = str(agencies_dir)
    return env


def _hub(env: dict, *args: str):
    return CliRunner().invoke(app, list(args), env=env)


def _import(engine, path) -> None:
    with session_scope(engine) as session:
        import_licences(session, read_licence_file(path), load_registry(), actor="test", skip_invalid=True)


def _rows(engine) -> list[QuarantinedRecord]:
    with Session(engine) as s:
        return list(s.exec(select(QuarantinedRecord).order_by(QuarantinedRecord.id)).all())


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


# --- intake --------------------------------------------------------------------------------
def test_list_and_show_name_the_file_record_field_and_raw(engine, tmp_path):
    _import(engine, write_jsonl(tmp_path / "licences-2026-11.jsonl", [grant(1), grant(2, XK_XDR_SHXYM=BAD_USCC)]))
    env = _env(_url(engine), tmp_path)

    listed = _hub(env, "quarantine", "list")
    assert listed.exit_code == 0, listed.output
    (line, summary) = listed.stdout.strip().splitlines()
    assert "intake" in line and "licences-2026-11.jsonl record 2" in line and "XK_XDR_SHXYM:" in line
    assert summary.startswith("1 record(s)")

    (entry,) = json.loads(_hub(env, "quarantine", "list", "--json", "--source", "intake").stdout)
    assert (entry["source"], entry["agency"], entry["released_at"]) == ("intake", None, None)
    assert entry["record_key"] == f"licence:{grant(2)['XK_WSH']}"
    assert json.loads(_hub(env, "quarantine", "list", "--json", "--agency", "SCJG").stdout) == []

    shown = _hub(env, "quarantine", "show", str(entry["id"]))
    assert shown.exit_code == 0, shown.output
    assert "XK_XDR_SHXYM: " in shown.stdout and BAD_USCC in shown.stdout and "open" in shown.stdout
    detail = json.loads(_hub(env, "quarantine", "show", str(entry["id"]), "--json").stdout)
    assert json.loads(detail["raw"])["XK_XDR_SHXYM"] == BAD_USCC
    assert [r["field"] for r in detail["reasons"]] == ["XK_XDR_SHXYM"]

    missing = _hub(env, "quarantine", "show", "9999")
    assert missing.exit_code == 1 and "no quarantined record 9999" in missing.stderr


def test_an_import_refused_twice_is_one_row_and_the_corrected_record_releases_it(engine, tmp_path):
    bad = write_jsonl(tmp_path / "g.jsonl", [grant(1), grant(2, XK_XDR_SHXYM=BAD_USCC)])
    _import(engine, bad)
    _import(engine, bad)
    (row,) = _rows(engine)
    assert row.released_at is None and row.record_ref == "g.jsonl record 2"

    _import(engine, write_jsonl(tmp_path / "fixed.jsonl", [grant(2)]))
    (row,) = _rows(engine)
    assert row.released_at is not None and row.release_note.startswith("superseded")
    env = _env(_url(engine), tmp_path)
    assert json.loads(_hub(env, "quarantine", "list", "--json").stdout) == []
    assert len(json.loads(_hub(env, "quarantine", "list", "--json", "--all").stdout)) == 1


def test_a_record_repeating_a_decision_number_is_not_released_by_the_record_it_repeats(engine, tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [grant(1), grant(2, XK_WSH=grant(1)["XK_WSH"])])
    _import(engine, path)
    _import(engine, write_jsonl(tmp_path / "changed.jsonl", [grant(1, XK_NR="预包装食品销售")]))
    (row,) = _rows(engine)
    assert row.released_at is None and row.record_key is None


def test_a_csv_header_naming_a_column_twice_is_refused_naming_it(tmp_path):
    g = grant(1)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*g, "XK_XDR_SHXYM"])
    writer.writerow([*g.values(), ""])
    (tmp_path / "dup.csv").write_text(buffer.getvalue(), encoding="utf-8")
    with pytest.raises(RefusedInput) as caught:
        read_licence_file(tmp_path / "dup.csv")
    assert "dup.csv" in str(caught.value) and "'XK_XDR_SHXYM' appears twice" in str(caught.value)


def test_status_counts_intake_rejects(engine, tmp_path):
    _import(engine, write_jsonl(tmp_path / "g.jsonl", [grant(1, XK_XDR_SHXYM=BAD_USCC), grant(2, XK_JDRQ="soon")]))
    with Session(engine) as s:
        status = collect_status(s, load_registry().values())
    assert status.quarantined_intake == 2
    assert "quarantined (intake): 2" in render_text(status)
    assert all(a.quarantined == 0 for a in status.agencies)


def test_dismiss_releases_with_the_reason_and_is_audited(engine, tmp_path):
    _import(engine, write_jsonl(tmp_path / "g.jsonl", [grant(1, XK_XDR_SHXYM=BAD_USCC), grant(2, XK_JDRQ="soon")]))
    first, second = (r.id for r in _rows(engine))
    env = _env(_url(engine), tmp_path)

    assert _hub(env, "quarantine", "dismiss", str(first)).exit_code == 2  # --reason is required
    unknown = _hub(env, "quarantine", "dismiss", str(first), "9999", "--reason", "test data")
    assert unknown.exit_code == 1 and "quarantine 9999: no such record" in unknown.stderr
    assert all(r.released_at is None for r in _rows(engine))  # all or none

    done = _hub(env, "quarantine", "dismiss", str(first), str(second), "--reason", "approval system re-sent them")
    assert done.exit_code == 0, done.output
    assert all(r.release_note == "dismissed by cli:op.zhang: approval system re-sent them" for r in _rows(engine))
    with Session(engine) as s:
        (entry,) = s.exec(select(AuditEntry).where(AuditEntry.action == "quarantine.dismiss")).all()
    assert (entry.actor, entry.detail["ids"]) == ("cli:op.zhang", [first, second])
    again = _hub(env, "quarantine", "dismiss", str(first), "--reason", "twice")
    assert again.exit_code == 1 and "released already" in again.stderr


def test_retry_of_an_intake_record_refused_again_keeps_it_open(engine, tmp_path):
    _import(engine, write_jsonl(tmp_path / "g.csv.jsonl", [grant(1, XK_XDR_SHXYM=BAD_USCC)]))
    (row,) = _rows(engine)
    result = _hub(_env(_url(engine), tmp_path), "quarantine", "retry", str(row.id))
    assert result.exit_code == 1 and "refused" in result.stdout and "XK_XDR_SHXYM" in result.stdout
    (after,) = _rows(engine)
    assert after.released_at is None and [r["field"] for r in after.reasons] == ["XK_XDR_SHXYM"]
