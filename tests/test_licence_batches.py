"""Recording many grants at once (an import, a backfill) leaves what recording them one by one leaves."""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from contracts.records import LicenceGrant
from contracts.registry import load_registry
from hub.db import create_db_engine, migrate, session_scope
from hub.licences import record_grants
from tests.helpers import grant, make_uscc


def _grants() -> list[LicenceGrant]:
    records = [
        grant(1), grant(2), grant(3, XK_FRDB=None),
        grant(4, XK_XDR_SHXYM=make_uscc(1), XK_XDR_MC="天津测试1号有限公司（更名）"),  # a second licence of company 1
        grant(2, XK_NR="热食类食品制售、冷食类食品制售"),  # licence 2 changed within the same import
        grant(5, XK_XDR_SHXYM=None, XK_XDR_GSZC="120104000055555"),  # company named by a legacy id only
        grant(6, approval_item="NK-JZ-009", industry="建筑"),  # routed elsewhere
        grant(1),  # licence 1 again, unchanged
    ]
    return [LicenceGrant.model_validate(r) for r in records]


def _state(engine) -> dict[str, list]:
    queries = {
        "companies": "SELECT uscc, name, category, org_code, reg_no, legal_rep FROM companies ORDER BY uscc IS NULL, uscc, reg_no",
        "licences": "SELECT l.decision_no, c.uscc, l.licence_no, l.approval_item, l.category, l.industry, l.lifecycle,"
                    " l.decision_date, l.valid_to, l.version, l.digest FROM licences l"
                    " JOIN companies c ON c.id = l.company_id ORDER BY l.decision_no",
        "revisions": "SELECT l.decision_no, r.version, r.lifecycle, r.digest FROM licence_revisions r"
                     " JOIN licences l ON l.id = r.licence_id ORDER BY l.decision_no, r.version",
        "deliveries": "SELECT d.message_id, l.decision_no, r.version, d.agency_code, d.state, d.attempts, CASE WHEN"
                      " d.superseded_by IS NULL THEN 0 ELSE 1 END FROM deliveries d JOIN licences l ON l.id = d.licence_id"
                      " JOIN licence_revisions r ON r.id = d.revision_id ORDER BY d.message_id",
        "audit": "SELECT actor, action, subject, payload_digest FROM audit_log ORDER BY id",
    }  # fmt: skip
    with engine.connect() as conn:
        state = {name: [tuple(map(_plain, row)) for row in conn.execute(sa.text(sql))] for name, sql in queries.items()}
        payloads = conn.execute(sa.text("SELECT decision_no, payload FROM licences ORDER BY decision_no")).all()
        state["payloads"] = [(no, json.loads(p) if isinstance(p, str) else p) for no, p in payloads]
    return state


def _plain(value):
    """The same value whichever database returned it (SQLite keeps dates as text)."""
    return value.isoformat() if isinstance(value, dt.date) else value


def test_one_import_leaves_what_recording_each_grant_in_turn_leaves(engine, tmp_path):
    registry = load_registry()
    with session_scope(engine) as s:
        together = record_grants(s, _grants(), registry, actor="t")
    one_by_one = create_db_engine(f"sqlite:///{tmp_path / 'one-by-one.sqlite3'}")
    migrate(one_by_one)
    outcomes = []
    for g in _grants():
        with session_scope(one_by_one) as s:
            outcomes.append(record_grants(s, [g], registry, actor="t"))

    assert (together.created, together.changed, together.unchanged) == (6, 1, 1)
    assert together.deliveries == sum(o.deliveries for o in outcomes)
    assert together.licence_ids and len(together.licence_ids) == 8
    batched, single = _state(engine), _state(one_by_one)
    for name in single:
        assert batched[name] == single[name], name
    renamed = [row for row in batched["companies"] if row[0] == make_uscc(1)]
    assert renamed[0][1] == "天津测试1号有限公司（更名）"  # the later grant names the company
    no_rep = [row for row in batched["companies"] if row[0] == make_uscc(3)]
    assert no_rep[0][5] is None
