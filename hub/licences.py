"""Recording licence grants and, in the same transaction, their outbox deliveries.

A licence is identified by its decision document number. Re-recording the same content
changes nothing; a change (new content, or a lifecycle step such as revocation) becomes a
new revision, and each routed agency gets a new delivery that supersedes any older one
still waiting to be sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlmodel import Session, select

from adapters.base import payload_digest
from contracts.records import LicenceGrant
from contracts.registry import AgencySpec
from hub import audit
from hub.clock import utcnow
from hub.companies import upsert_company
from hub.models import Agency, Delivery, DeliveryState, Licence, LicenceRevision
from hub.routing import route

__all__ = ["IntakeResult", "ensure_agencies", "message_id_for", "record_grants"]

_MESSAGE_NS = uuid.UUID("6f1c1d0e-3f0a-5b7e-9a51-5348475548ab")
_OPEN = (DeliveryState.PENDING, DeliveryState.WAITING_RETRY, DeliveryState.DEAD)


@dataclass
class IntakeResult:
    created: int = 0
    changed: int = 0
    unchanged: int = 0
    deliveries: int = 0
    quarantined: int = 0
    licence_ids: list[int] = field(default_factory=list)


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


def _open_deliveries(session: Session, revision: LicenceRevision, codes: list[str]) -> int:
    licence_id = revision.licence_id
    older = session.exec(
        select(Delivery).where(Delivery.licence_id == licence_id, Delivery.state.in_(_OPEN))
    ).all()
    created = []
    for code in codes:
        delivery = Delivery(
            message_id=message_id_for(revision.payload["XK_WSH"], revision.version, code),
            licence_id=licence_id,
            revision_id=revision.id,
            agency_code=code,
        )
        session.add(delivery)
        created.append(delivery)
    session.flush()
    newest = {d.agency_code: d.id for d in created}
    for old in older:
        # Only the newest state of a licence matters to an agency that has not received the old one.
        if old.agency_code in newest:
            old.state, old.superseded_by, old.updated_at = DeliveryState.SUPERSEDED, newest[old.agency_code], utcnow()
    return len(created)


def record_grants(
    session: Session,
    grants: Iterable[LicenceGrant],
    agencies: Mapping[str, AgencySpec],
    *,
    actor: str,
) -> IntakeResult:
    """Upsert grants, append revisions and create routed deliveries, all in the caller's transaction.

    Args:
        session: the open transaction; the caller commits (or rolls back everything).
        grants: validated grants.
        agencies: the registry, for routing.
        actor: who recorded them (a CLI user, an API client), for the audit log.
    """
    result, entries = IntakeResult(), []
    ensure_agencies(session, agencies.values())
    for grant in grants:
        canonical = _canonical(grant)
        digest = payload_digest(canonical)
        licence = session.exec(select(Licence).where(Licence.decision_no == grant.decision_no)).first()
        if licence is not None and licence.digest == digest:
            result.unchanged += 1
            result.licence_ids.append(licence.id)
            continue
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
        codes = route(grant, agencies.values())
        result.deliveries += _open_deliveries(session, revision, codes)
        result.licence_ids.append(licence.id)
        entries.append({"actor": actor, "action": f"licence.{grant.lifecycle.value}",
                        "subject": f"licence:{grant.decision_no}",
                        "detail": {"version": licence.version, "company": grant.uscc, "routed_to": codes},
                        "payload_digest": digest})  # fmt: skip
    audit.append_many(session, entries)  # one read of the chain's head for the whole import
    return result
