"""Recording licence grants and, in the same transaction, their outbox deliveries.

A licence is identified by its decision document number. Re-recording the same content, or
content it had before (an old file imported again), changes nothing; a change (new content, or
a lifecycle step such as revocation) becomes a new revision, and each routed agency, and each
agency the licence went to before, gets a new delivery that supersedes any older one still
waiting to be sent. A revoked, cancelled or invalidated licence is not brought back by a later
grant or change: the record is refused, naming it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from adapters.base import payload_digest
from contracts.records import LicenceGrant
from contracts.registry import AgencySpec
from hub import audit
from hub.clock import utcnow
from contracts.uscc import PLACEHOLDER
from hub.bulk import bulk_insert, new_ids
from hub.companies import upsert_companies, upsert_company
from hub.errors import ContractViolation, Problem, TransientError
from hub.models import Agency, Delivery, DeliveryState, Licence, LicenceRevision
from hub.quarantine import release_superseded
from hub.routing import route

__all__ = ["IntakeResult", "ensure_agencies", "message_id_for", "record_grants"]

_MESSAGE_NS = uuid.UUID("6f1c1d0e-3f0a-5b7e-9a51-5348475548ab")
_OPEN = (DeliveryState.PENDING, DeliveryState.WAITING_RETRY, DeliveryState.DEAD)
_ENDED = frozenset({"revoked", "cancelled", "invalidated"})
_LICENCE_WRITERS_LOCK = sa.select(sa.func.pg_advisory_xact_lock(0x5348_4C49))  # 'SHLI'; hub.audit has its own
LICENCE_LOCK_WAIT = 30.0  # seconds a licence writer waits for its turn (PostgreSQL)
_CHUNK = 500  # grants per lookup and bulk insert: far below SQLite's and PostgreSQL's parameter limits
_LICENCE_COLUMNS = ("id", "decision_no", "licence_no", "company_id", "approval_item", "bureau_section", "category",
                    "industry", "lifecycle", "decision_date", "valid_from", "valid_to", "version", "digest", "payload",
                    "created_at", "updated_at")  # fmt: skip
_REVISION_COLUMNS = ("id", "licence_id", "version", "lifecycle", "digest", "payload", "recorded_at")
_DELIVERY_COLUMNS = ("message_id", "licence_id", "revision_id", "agency_code", "state", "attempts", "next_attempt_at",
                     "created_at", "updated_at")  # fmt: skip


@dataclass
class IntakeResult:
    created: int = 0
    changed: int = 0
    unchanged: int = 0
    deliveries: int = 0
    quarantined: int = 0
    licence_ids: list[int] = field(default_factory=list)
    refused: list[tuple[LicenceGrant, Problem]] = field(default_factory=list)  # skipped, with why (skip_refused)


def ensure_agencies(session: Session, agencies: Iterable[AgencySpec]) -> None:
    """Mirror the registry into the agencies table (names and protocols may change over time)."""
    for spec in agencies:
        row = session.get(Agency, spec.code) or Agency(code=spec.code, name_zh="", name_en="", kind="", protocol="")
        row.name_zh, row.name_en, row.kind, row.protocol = spec.name_zh, spec.name_en, spec.kind, spec.protocol
        session.add(row)
    session.flush()


def message_id_for(decision_no: str, version: int, agency_code: str) -> str:
    """Stable idempotency key: the same revision to the same agency always has the same id."""
    return str(uuid.uuid5(_MESSAGE_NS, f"{decision_no}\x1f{version}\x1f{agency_code}"))


def _canonical(grant: LicenceGrant) -> dict:
    return grant.model_dump(mode="json", by_alias=True, exclude_none=True)


_NEWER = aliased(Delivery)
#: Only the newest state of a licence matters to an agency that has not received the old one. The
#: state is checked as the row is written: a push may have claimed it (*sending*) since it was
#: last seen, and what is on the wire is the push's to settle (hub.push supersedes it if it fails).
_SUPERSEDE = (
    sa.update(Delivery)
    .where(Delivery.licence_id == sa.bindparam("licence"), Delivery.revision_id != sa.bindparam("revision"),
           Delivery.agency_code.in_(sa.bindparam("codes", expanding=True)), Delivery.state.in_(_OPEN))
    .values(state=DeliveryState.SUPERSEDED, updated_at=sa.bindparam("now"),
            superseded_by=sa.select(_NEWER.id).where(_NEWER.revision_id == sa.bindparam("revision"),
                                                     _NEWER.agency_code == Delivery.agency_code).scalar_subquery())
)  # fmt: skip


def _open_deliveries(session: Session, revision: LicenceRevision, codes: list[str]) -> int:
    for code in codes:
        session.add(Delivery(
            message_id=message_id_for(revision.payload["XK_WSH"], revision.version, code),
            licence_id=revision.licence_id,
            revision_id=revision.id,
            agency_code=code,
        ))  # fmt: skip
    session.flush()
    if codes:
        session.connection().execute(_SUPERSEDE, {"licence": revision.licence_id, "revision": revision.id,
                                                  "codes": codes, "now": utcnow()})  # fmt: skip
    return len(codes)


def record_grants(
    session: Session,
    grants: Iterable[LicenceGrant],
    agencies: Mapping[str, AgencySpec],
    *,
    actor: str,
    skip_refused: bool = False,
    lock_wait: float = LICENCE_LOCK_WAIT,
    before: dt.datetime | None = None,
) -> IntakeResult:
    """Upsert grants, append revisions and create routed deliveries, all in the caller's transaction.

    Grants are taken in chunks: a chunk's licences are looked up with one query, and new
    licences (the bulk of an import or a backfill) are written with one bulk insert per table.
    A grant that changes a licence, repeats one within its chunk, or names its company only by
    a legacy id is recorded one at a time after the chunk's new ones, so the outcome is what
    recording the grants one by one in their order gives.

    Args:
        session: the open transaction; the caller commits (or rolls back everything).
        grants: validated grants.
        agencies: the registry, for routing.
        actor: who recorded them (a CLI user, an API client), for the audit log.
        skip_refused: a grant the licence's state refuses (one bringing an ended licence back) is
            skipped and listed in ``result.refused``; otherwise it raises ContractViolation.
        lock_wait: on PostgreSQL, seconds to wait while another transaction records licences,
            before TransientError.
        before: the open quarantine rows a recorded licence releases are those refused before it
            (hub.quarantine.release_superseded): when the caller's batch began, taken before it
            quarantined any of it; by default, now.
    """
    before = before or utcnow()
    result, entries = IntakeResult(), []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Regulators' feeds read revisions by id, and move past the highest they saw: ids must
        # commit in their order, so writers of licences take turns (SQLite's writers always do).
        _take_turn(connection, lock_wait)
    ensure_agencies(session, agencies.values())
    specs = list(agencies.values())
    chunk: list[LicenceGrant] = []
    for grant in grants:
        chunk.append(grant)
        if len(chunk) == _CHUNK:
            entries += _record_chunk(session, chunk, specs, actor, result, skip_refused)
            chunk = []
    if chunk:
        entries += _record_chunk(session, chunk, specs, actor, result, skip_refused)
    # a licence recorded anew supersedes its refused version (an entry's subject is its licence_key);
    # before the audit log's lock, as every writer takes quarantine rows and that lock: a dismiss
    # holding rows while waiting for the log could otherwise wait on us the other way round
    release_superseded(session, [entry["subject"] for entry in entries], before=before)
    audit.append_many(session, entries)  # one read of the chain's head for the whole import
    return result


def _record_chunk(session: Session, grants: list[LicenceGrant], specs: list[AgencySpec], actor: str,
                  result: IntakeResult, skip_refused: bool) -> list[dict]:  # fmt: skip
    prepared = []
    for grant in grants:
        canonical = _canonical(grant)
        prepared.append((grant, canonical, payload_digest(canonical)))
    rows = session.execute(sa.select(Licence.decision_no, Licence.id, Licence.digest)
                           .where(Licence.decision_no.in_({g.decision_no for g in grants})))  # fmt: skip
    known = {decision_no: (licence_id, digest) for decision_no, licence_id, digest in rows}
    ids: list[int | None] = [None] * len(grants)
    entries: list[dict | None] = [None] * len(grants)
    fresh, one_by_one, seen = [], [], set()
    for index, (grant, _, digest) in enumerate(prepared):
        key = grant.decision_no
        if key in seen or (key in known and known[key][1] != digest) or not (grant.uscc and grant.uscc != PLACEHOLDER):
            one_by_one.append(index)
        elif key in known:
            result.unchanged += 1
            ids[index] = known[key][0]
        else:
            fresh.append(index)
        seen.add(key)
    if fresh:
        for index, licence_id, entry in _insert_new(session, [prepared[i] for i in fresh], fresh, specs, actor, result):
            ids[index], entries[index] = licence_id, entry
    for index in one_by_one:
        ids[index], entries[index] = _record_one(session, *prepared[index], specs, actor, result, skip_refused)
    result.licence_ids += [i for i in ids if i is not None]
    return [e for e in entries if e is not None]


def _insert_new(session: Session, prepared: list, positions: list[int], specs: list[AgencySpec], actor: str,
                result: IntakeResult) -> list[tuple[int, int, dict]]:  # fmt: skip
    """Licences never recorded before, with their first revision and deliveries, one bulk insert per table."""
    companies = upsert_companies(session, [grant for grant, _, _ in prepared])
    licence_ids = new_ids(session, Licence.__table__, len(prepared))
    revision_ids = new_ids(session, LicenceRevision.__table__, len(prepared))
    now = utcnow()
    licences, revisions, deliveries, done = [], [], [], []
    for position, licence_id, revision_id, (grant, canonical, digest) in zip(
        positions, licence_ids, revision_ids, prepared, strict=True
    ):
        text, lifecycle = json.dumps(canonical, ensure_ascii=False), grant.lifecycle.value
        licences.append((licence_id, grant.decision_no, grant.licence_no, companies[grant.uscc], grant.approval_item,
                         grant.bureau_section, grant.licence_category.value, grant.industry, lifecycle,
                         grant.decision_date, grant.valid_from, grant.valid_to, 1, digest, text, now, now))  # fmt: skip
        revisions.append((revision_id, licence_id, 1, lifecycle, digest, text, now))
        codes = route(grant, specs)
        deliveries += [(message_id_for(grant.decision_no, 1, code), licence_id, revision_id, code,
                        DeliveryState.PENDING.value, 0, now, now, now) for code in codes]  # fmt: skip
        result.created += 1
        result.deliveries += len(codes)
        done.append((position, licence_id, _entry(actor, grant, 1, codes, digest)))
    bulk_insert(session, Licence.__table__, _LICENCE_COLUMNS, licences)
    bulk_insert(session, LicenceRevision.__table__, _REVISION_COLUMNS, revisions)
    bulk_insert(session, Delivery.__table__, _DELIVERY_COLUMNS, deliveries)
    return done


def _entry(actor: str, grant: LicenceGrant, version: int, codes: list[str], digest: str) -> dict:
    return {"actor": actor, "action": f"licence.{grant.lifecycle.value}", "subject": f"licence:{grant.decision_no}",
            "detail": {"version": version, "company": grant.uscc, "routed_to": codes}, "payload_digest": digest}  # fmt: skip


def _record_one(session: Session, grant: LicenceGrant, canonical: dict, digest: str, specs: list[AgencySpec],
                actor: str, result: IntakeResult, skip_refused: bool) -> tuple[int | None, dict | None]:  # fmt: skip
    licence = session.exec(select(Licence).where(Licence.decision_no == grant.decision_no)).first()
    if licence is not None and (licence.digest == digest or _recorded_before(session, licence.id, digest)):
        # the same content again, or content it had before (an old file imported again, a retried
        # POST): not news, and never a step back from a revocation that came after it
        result.unchanged += 1
        return licence.id, None
    earlier_agencies: list[str] = []
    if licence is not None:
        if (problem := _revival(licence, grant)) is not None:
            if not skip_refused:
                raise ContractViolation.of([problem])
            result.refused.append((grant, problem))
            return None, None
        earlier_agencies = list(session.exec(select(Delivery.agency_code).where(Delivery.licence_id == licence.id)
                                             .distinct().order_by(Delivery.agency_code)).all())  # fmt: skip
    company = upsert_company(session, grant)
    if licence is None:
        licence = Licence(decision_no=grant.decision_no, company_id=company.id, version=0, digest="",
                          payload={}, approval_item="", bureau_section="", category="", lifecycle="",
                          decision_date=grant.decision_date, valid_from=grant.valid_from,
                          valid_to=grant.valid_to)  # fmt: skip
        result.created += 1
    else:
        result.changed += 1
    licence.company_id = company.id
    licence.licence_no = grant.licence_no
    licence.approval_item, licence.bureau_section = grant.approval_item, grant.bureau_section
    licence.category, licence.industry = grant.licence_category.value, grant.industry
    licence.lifecycle = grant.lifecycle.value
    licence.decision_date, licence.valid_from, licence.valid_to = grant.decision_date, grant.valid_from, grant.valid_to
    licence.version += 1
    licence.digest, licence.payload, licence.updated_at = digest, canonical, utcnow()
    session.add(licence)
    session.flush()
    revision = LicenceRevision(licence_id=licence.id, version=licence.version, lifecycle=licence.lifecycle,
                               digest=digest, payload=canonical)  # fmt: skip
    session.add(revision)
    session.flush()
    codes = route(grant, specs)
    # an agency told of the licence before is told of its change too, though the change no longer
    # routes there (a revocation without the industry that sent it to the fire brigade)
    known = {spec.code for spec in specs}
    codes += [code for code in earlier_agencies if code not in codes and code in known]
    result.deliveries += _open_deliveries(session, revision, codes)
    return licence.id, _entry(actor, grant, licence.version, codes, digest)


def _take_turn(connection: sa.Connection, seconds: float) -> None:
    """The licence writers' lock, waited for ``seconds`` at most: a POST arriving while a large
    import runs is told to come back (TransientError, 503), rather than hold a connection and a
    worker thread of the API until the import is done."""
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{max(1, int(seconds * 1000))}ms'")
    try:
        connection.execute(_LICENCE_WRITERS_LOCK)
    except sa.exc.OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        raise TransientError(f"another import is recording licences; try again in a minute "
                             f"(waited {seconds:g} s)", retry_after=60) from exc  # fmt: skip
    connection.exec_driver_sql("SET LOCAL lock_timeout = DEFAULT")


def _recorded_before(session: Session, licence_id: int, digest: str) -> bool:
    return session.exec(select(LicenceRevision.id).where(LicenceRevision.licence_id == licence_id,
                                                         LicenceRevision.digest == digest).limit(1)).first() is not None


def _revival(licence: Licence, grant: LicenceGrant) -> Problem | None:
    """Why ``grant`` may not be recorded: a revoked, cancelled or invalidated licence stays ended,
    and a new grant takes a new decision number."""
    if licence.lifecycle in _ENDED and grant.lifecycle.value not in _ENDED:
        return Problem(record=grant.decision_no, field="lifecycle",
                       reason=f"the licence was {licence.lifecycle} (version {licence.version}): a "
                              f"{grant.lifecycle.value} record cannot bring it back; a new grant takes a new "
                              "decision number")  # fmt: skip
    return None
