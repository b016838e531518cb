"""How every agency's exchange stands: the model behind `hub status` and GET /api/v1/agencies.

Per agency: last successful push and pull, lag (how old the newest pulled data is, and how long
the oldest undelivered licence has waited), deliveries by state, open quarantined records, who
holds the sync lease, and the earliest expiry among the certificates used with that agency.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, select

from contracts.registry import AgencySpec
from hub.clock import utcnow
from hub.errors import ConfigurationError
from hub.leases import is_live
from hub.models import Agency, Delivery, DeliveryState, QuarantinedRecord, SyncLease
from hub.outbox import delivery_counts

__all__ = ["AgencyStatus", "CertificateExpiry", "HubStatus", "age", "collect_status", "render_text"]


class CertificateExpiry(BaseModel):
    """The certificate (hub's or agency's) used with an agency that expires first, or one that cannot be read."""

    name: str
    not_after: dt.datetime | None  # None: the file cannot be read
    days_left: int | None
    level: str  # ok | warn | critical | expired | unreadable
    error: str | None = None  # why an unreadable file cannot be read


class AgencyStatus(BaseModel):
    """One agency's exchange at a glance."""

    code: str
    name_zh: str
    protocol: str
    last_push_at: dt.datetime | None
    last_pull_at: dt.datetime | None
    pull_lag_seconds: float | None  # since the last successful pull; None: never pulled
    fresh: bool  # pulled within the freshness window (HUB_FRESHNESS_HOURS)
    oldest_undelivered_seconds: float | None  # how long the oldest open delivery has waited
    pending: int
    sending: int
    retrying: int
    dead: int
    delivered: int
    quarantined: int  # not yet released
    lease_holder: str | None  # None when no sync is running
    lease_expires_at: dt.datetime | None
    last_error: str | None
    last_error_at: dt.datetime | None
    certificate: CertificateExpiry | None


class HubStatus(BaseModel):
    """Every agency, as of ``at``."""

    at: dt.datetime
    agencies: list[AgencyStatus]
    quarantined_intake: int = 0  # licence records refused at import (no agency): `hub quarantine list --source intake`


def _certificates(pki_dir: Path | None, now: dt.datetime) -> dict[str, CertificateExpiry]:
    """Earliest-expiring certificate per party name ('hub', agency codes); empty without a PKI."""
    if pki_dir is None:
        return {}
    from certs.lifecycle import cert_status

    try:
        statuses = cert_status(pki_dir, now=now)
    except ConfigurationError:
        return {}
    earliest: dict[str, CertificateExpiry] = {}
    for status in statuses:
        if status.accepted_until is not None:
            continue  # rotated out: its successor is the one in use, whose expiry is what matters
        party = status.name.split("/", 1)[0]
        if party == "ca":
            party = "hub"  # everyone depends on the CA as on the hub's own certificates
        candidate = CertificateExpiry(name=status.name, not_after=status.not_after, days_left=status.days_left,
                                      level=status.level.value, error=status.error)  # fmt: skip
        seen = earliest.get(party)
        if seen is None or _urgency(candidate) < _urgency(seen):
            earliest[party] = candidate
    return earliest


def _urgency(cert: CertificateExpiry) -> tuple[int, dt.datetime]:
    """Sort key, most urgent first: an unreadable file (no expiry known), then the earliest expiry."""
    if cert.not_after is None:
        return 0, dt.datetime.min.replace(tzinfo=dt.UTC)
    return 1, cert.not_after


def _seconds(since: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if since is None else max((now - since).total_seconds(), 0.0)


def collect_status(session: Session, registry: Iterable[AgencySpec] | None = None, *,
                   pki_dir: Path | None = None, freshness_hours: float = 24.0,
                   now: dt.datetime | None = None) -> HubStatus:  # fmt: skip
    """Gather every agency's status from the database (and the PKI directory, when given).

    Args:
        session: a read transaction.
        registry: the agencies to show (the data files); every agency in the database by default.
        pki_dir: where the certificates are (Settings.resolved_pki_dir).
        freshness_hours: older pulled data is not fresh.
        now: the clock.
    """
    now = now or utcnow()
    rows = {a.code: a for a in session.exec(select(Agency)).all()}
    codes = [s.code for s in registry] if registry is not None else sorted(rows)
    counts = delivery_counts(session)
    quarantined = dict(session.exec(
        select(QuarantinedRecord.agency_code, sa.func.count())
        .where(QuarantinedRecord.released_at.is_(None), QuarantinedRecord.agency_code.is_not(None))
        .group_by(QuarantinedRecord.agency_code)
    ).all())  # fmt: skip
    oldest = dict(session.exec(
        select(Delivery.agency_code, sa.func.min(Delivery.created_at))
        .where(Delivery.state.in_((DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.WAITING_RETRY)))
        .group_by(Delivery.agency_code)
    ).all())  # fmt: skip
    leases = {lease.agency_code: lease for lease in session.exec(select(SyncLease)).all()}
    certs = _certificates(pki_dir, now)
    window = dt.timedelta(hours=freshness_hours)
    agencies = []
    for code in codes:
        row = rows.get(code) or Agency(code=code, name_zh="", name_en="", kind="", protocol="")
        by_state = counts.get(code, {})
        lease = leases.get(code)
        live = is_live(lease, now)
        mine, hub = certs.get(code), certs.get("hub")
        cert = min((c for c in (mine, hub) if c), key=_urgency, default=None)
        agencies.append(AgencyStatus(
            code=code, name_zh=row.name_zh, protocol=row.protocol,
            last_push_at=row.last_push_at, last_pull_at=row.last_pull_at,
            pull_lag_seconds=_seconds(row.last_pull_at, now),
            fresh=row.last_pull_at is not None and now - row.last_pull_at <= window,
            oldest_undelivered_seconds=_seconds(oldest.get(code), now),
            pending=by_state.get(DeliveryState.PENDING, 0), sending=by_state.get(DeliveryState.SENDING, 0),
            retrying=by_state.get(DeliveryState.WAITING_RETRY, 0), dead=by_state.get(DeliveryState.DEAD, 0),
            delivered=by_state.get(DeliveryState.DELIVERED, 0), quarantined=quarantined.get(code, 0),
            lease_holder=lease.holder if live else None, lease_expires_at=lease.expires_at if live else None,
            last_error=row.last_error, last_error_at=row.last_error_at, certificate=cert,
        ))  # fmt: skip
    intake = session.exec(select(sa.func.count()).select_from(QuarantinedRecord).where(
        QuarantinedRecord.released_at.is_(None), QuarantinedRecord.agency_code.is_(None))).one()  # fmt: skip
    return HubStatus(at=now, agencies=agencies, quarantined_intake=intake)


def age(seconds: float | None) -> str:
    """How long ago, for a terminal: '40s ago', '12m ago', '3.5h ago', '2.0d ago', or 'never'."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def render_text(status: HubStatus) -> str:
    """A plain-text table for a terminal, one block per agency."""
    lines = [f"hub status at {status.at.isoformat(timespec='seconds')}",
             f"quarantined (intake): {status.quarantined_intake}"]
    for a in status.agencies:
        stale = "" if a.fresh else "  STALE"
        lines.append(f"{a.code:<6} {a.name_zh} ({a.protocol}){stale}")
        lines.append(f"    push {age(_seconds(a.last_push_at, status.at))}; pull {age(a.pull_lag_seconds)}"
                     + (f"; oldest undelivered waits {age(a.oldest_undelivered_seconds).replace(' ago', '')}"
                        if a.oldest_undelivered_seconds is not None else ""))  # fmt: skip
        lines.append(f"    deliveries: {a.pending} pending, {a.sending} sending, {a.retrying} retrying, "
                     f"{a.dead} dead, {a.delivered} delivered; {a.quarantined} quarantined")  # fmt: skip
        if a.lease_holder:
            lines.append(f"    syncing now: {a.lease_holder} (lease until {a.lease_expires_at:%H:%M:%S})")
        if a.certificate:
            c = a.certificate
            mark = "" if c.level == "ok" else f"  {c.level.upper()}"
            if c.not_after is None:
                lines.append(f"    certificate {c.name} cannot be read: {c.error}{mark}")
            else:
                lines.append(f"    certificate {c.name} expires {c.not_after:%Y-%m-%d} ({c.days_left} days){mark}")
        if a.last_error:
            when = f" at {a.last_error_at:%Y-%m-%d %H:%M}" if a.last_error_at else ""
            lines.append(f"    last error{when}: {a.last_error}")
    return "\n".join(lines)
