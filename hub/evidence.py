"""Evidence bundles: the audit entries about one licence or one company, checkable offline.

A bundle is a directory::

    manifest.json        what the bundle is about, the chain head, and the SHA-256 of every file
    manifest.jws         the manifest signed by the hub (compact JWS, ES256, cert in x5c), when a PKI exists
    entries.jsonl        the relevant audit entries, each with its hash and prev_hash
    chain.jsonl          (id, prev_hash, entry_hash) of every entry from genesis to the head, to check links
    licence-revisions.jsonl    every stored revision of the licences concerned, with its digest
    violation-revisions.jsonl  every stored revision of the company's violations (company bundles)
    receipts.jsonl       the deliveries of those licences and the agencies' receipts for them
    certificates/*.pem   the CA and the certificates of the hub and the agencies involved

``python -m hub.evidence_verify DIR`` (stdlib and cryptography only; see docs/evidence.md)
checks all of it without the hub's database or code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from hub.audit import GENESIS, stamp_of, verify_chain
from hub.clock import utcnow
from hub.errors import ConfigurationError, FatalError, RefusedInput
from hub.history import find_company
from hub.models import AuditEntry, Delivery, Licence, LicenceRevision, Violation, ViolationRevision

__all__ = ["BUNDLE_FORMAT", "ExportResult", "export_evidence"]

BUNDLE_FORMAT = "shenguan-evidence/1"
_CARRIERS = ("pull.page", "api.violations")  # entries whose detail.refs name the records they carried
_BATCH = 5000


@dataclass
class ExportResult:
    """What went into a bundle."""

    directory: Path
    entries: int = 0
    chain_length: int = 0
    signed: bool = False
    files: list[str] = field(default_factory=list)


def _entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": stamp_of(entry.at), "actor": entry.actor, "action": entry.action,
            "subject": entry.subject, "detail": entry.detail, "payload_digest": entry.payload_digest,
            "prev_hash": entry.prev_hash, "entry_hash": entry.entry_hash}  # fmt: skip


def _all_entries(session: Session) -> Iterator[AuditEntry]:
    after = 0
    while True:
        rows = session.exec(select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id).limit(_BATCH)).all()
        if not rows:
            return
        for row in rows:
            yield row
            session.expunge(row)  # keep memory flat on long logs
        after = rows[-1].id


def _jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True, default=str) + "\n")


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass
class _Selection:
    subject: dict[str, str]
    licences: list[Licence]
    violations: list[Violation] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)  # audit subjects that concern the selection
    carried: dict[str, set[str]] = field(default_factory=dict)  # agency -> its record ids in the selection


def _select(session: Session, licence: str | None, company: str | None) -> _Selection:
    if (licence is None) == (company is None):
        raise RefusedInput("name exactly one of --licence or --company")
    if licence is not None:
        row = session.exec(select(Licence).where(Licence.decision_no == licence.strip())).first()
        if row is None:
            raise RefusedInput(f"no licence with decision number {licence!r}")
        chosen = _Selection({"licence": row.decision_no}, [row])
    else:
        found = find_company(session, company or "")
        if found is None:
            raise RefusedInput(f"no company with USCC, organisation code or registration number {company!r}")
        rows = session.exec(select(Licence).where(Licence.company_id == found.id).order_by(Licence.id)).all()
        violations = session.exec(select(Violation).where(Violation.company_id == found.id)
                                  .order_by(Violation.id)).all()  # fmt: skip
        chosen = _Selection({"company": found.uscc or str(found.id), "name": found.name}, list(rows), list(violations))
        chosen.subjects |= {f"company:{found.uscc}", f"company:{found.id}"}
        for v in violations:
            chosen.carried.setdefault(v.source_agency, set()).add(v.agency_record_id)
    for row in chosen.licences:
        chosen.subjects.add(f"licence:{row.decision_no}")
    return chosen


def _deliveries(session: Session, licences: list[Licence]) -> list[Delivery]:
    ids = [lic.id for lic in licences]
    if not ids:
        return []
    return list(session.exec(select(Delivery).where(Delivery.licence_id.in_(ids)).order_by(Delivery.id)).all())


def _relevant(entry: AuditEntry, chosen: _Selection) -> bool:
    if entry.subject in chosen.subjects:
        return True
    if entry.action == "delivery.receipt":  # one entry per pushed batch, listing each receipt
        receipts = (entry.detail or {}).get("receipts") or []
        return any(f"licence:{r.get('licence')}" in chosen.subjects or f"delivery:{r.get('message_id')}" in chosen.subjects
                   for r in receipts)  # fmt: skip
    if entry.action in _CARRIERS and chosen.carried:
        agency = entry.subject.removeprefix("agency:")
        refs = set((entry.detail or {}).get("refs") or [])
        return bool(refs & chosen.carried.get(agency, set()))
    if entry.action == "quarantine.retry":  # a record stored on retry came in through this entry
        detail = entry.detail or {}
        refs = set(detail.get("refs") or [])
        if detail.get("agency"):
            return bool(refs & chosen.carried.get(detail["agency"], set()))
        return any(f"licence:{ref}" in chosen.subjects for ref in refs)  # an import's licence
    return False


def _certificates(pki_dir: Path | None, agencies: Iterable[str], target: Path) -> list[Path]:
    if pki_dir is None or not (pki_dir / "ca.pem").is_file():
        return []
    target.mkdir()
    wanted = [("ca.pem", pki_dir / "ca.pem")]
    wanted += [(f"hub-{kind}.pem", pki_dir / "hub" / f"{kind}.pem") for kind in ("signing", "client", "server")]
    for code in sorted(set(agencies)):
        wanted += [(f"{code}-{kind}.pem", pki_dir / "agencies" / code / f"{kind}.pem")
                   for kind in ("signing", "client", "server")]  # fmt: skip
    copied = []
    for name, source in wanted:
        if source.is_file():  # certificates only: the PKI's keys never leave it
            shutil.copyfile(source, target / name)
            copied.append(target / name)
    return copied


def _sign(pki_dir: Path | None, manifest: bytes) -> str | None:
    if pki_dir is None:
        return None
    cert_path, key_path = pki_dir / "hub" / "signing.pem", pki_dir / "hub" / "signing.key"
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    from certs.dropseal import seal_manifest
    from certs.pki import load_certificate, load_private_key

    return seal_manifest(manifest, signing_cert=load_certificate(cert_path), signing_key=load_private_key(key_path))


def export_evidence(session: Session, directory: Path, *, licence: str | None = None, company: str | None = None,
                    pki_dir: Path | None = None, exported_by: str = "hub") -> ExportResult:  # fmt: skip
    """Write the evidence bundle for one licence (decision number) or one company (USCC or legacy id).

    The whole chain is verified first: the hub refuses to hand out evidence from a broken log.

    Args:
        session: a read session.
        directory: where to write; must not exist yet or be empty.
        licence: the licence's decision number (XK_WSH).
        company: the company's USCC, organisation code or registration number.
        pki_dir: the hub's PKI; when it holds the hub's signing key, the manifest is signed with it.
        exported_by: who asked (recorded in the manifest).

    Raises:
        RefusedInput: neither or both selectors, an unknown licence or company, or a non-empty directory.
        FatalError: the audit chain is broken (the first altered entry is named).
    """
    checked, broken = verify_chain(session)
    if broken is not None:
        raise FatalError(f"audit chain broken at entry {broken.entry_id}: {broken.reason}; no evidence exported")
    chosen = _select(session, licence, company)
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise RefusedInput(f"{directory} is not empty; an evidence bundle needs a directory of its own")
    directory.mkdir(parents=True, exist_ok=True)
    result = ExportResult(directory)

    deliveries = _deliveries(session, chosen.licences)
    chosen.subjects |= {f"delivery:{d.message_id}" for d in deliveries}
    head = {"id": 0, "entry_hash": GENESIS}
    # Streamed: the chain file grows with the log, memory does not. The entries written are the ones
    # verify_chain just checked, so they are not hashed again; any appended since wait for a later bundle.
    with (directory / "entries.jsonl").open("w", encoding="utf-8", newline="\n") as entries, \
            (directory / "chain.jsonl").open("w", encoding="utf-8", newline="\n") as links:  # fmt: skip
        for entry in islice(_all_entries(session), checked):
            head = {"id": entry.id, "prev_hash": entry.prev_hash, "entry_hash": entry.entry_hash}
            links.write(json.dumps(head, sort_keys=True) + "\n")
            result.chain_length += 1
            if _relevant(entry, chosen):
                entries.write(json.dumps(_entry_json(entry), ensure_ascii=False, sort_keys=True, default=str) + "\n")
                result.entries += 1
    session.expunge_all()

    numbers = {lic.id: lic.decision_no for lic in chosen.licences}
    revisions = session.exec(select(LicenceRevision).where(LicenceRevision.licence_id.in_(list(numbers) or [-1]))
                             .order_by(LicenceRevision.id)).all()  # fmt: skip
    _jsonl(directory / "licence-revisions.jsonl", (
        {"decision_no": numbers[r.licence_id], "version": r.version, "lifecycle": r.lifecycle,
         "recorded_at": r.recorded_at.isoformat(), "digest": r.digest, "payload": r.payload} for r in revisions))  # fmt: skip
    files = ["entries.jsonl", "chain.jsonl", "licence-revisions.jsonl"]
    if "company" in chosen.subject:
        keys = {v.id: (v.source_agency, v.agency_record_id) for v in chosen.violations}
        vrevs = session.exec(select(ViolationRevision).where(ViolationRevision.violation_id.in_(list(keys) or [-1]))
                             .order_by(ViolationRevision.id)).all()  # fmt: skip
        _jsonl(directory / "violation-revisions.jsonl", (
            {"agency": keys[r.violation_id][0], "agency_record_id": keys[r.violation_id][1], "version": r.version,
             "recorded_at": r.recorded_at.isoformat(), "digest": r.digest, "payload": r.payload} for r in vrevs))  # fmt: skip
        files.append("violation-revisions.jsonl")
    _jsonl(directory / "receipts.jsonl", (
        {"decision_no": numbers[d.licence_id], "agency": d.agency_code, "message_id": d.message_id,
         "state": d.state, "sent_digest": d.sent_digest, "ack_id": d.ack_id,
         "acked_at": d.acked_at.isoformat() if d.acked_at else None, "receipt_digest": d.receipt_digest}
        for d in deliveries))  # fmt: skip
    files.append("receipts.jsonl")
    agencies = {d.agency_code for d in deliveries} | set(chosen.carried)
    certs = _certificates(pki_dir, agencies, directory / "certificates")
    files += [str(p.relative_to(directory)) for p in certs]

    manifest = {
        "format": BUNDLE_FORMAT, "subject": chosen.subject, "exported_at": utcnow().isoformat(),
        "exported_by": exported_by, "chain": {"checked": checked, "head_id": head["id"], "head_hash": head["entry_hash"]},
        "entries": result.entries, "files": {name: _sha256(directory / name) for name in sorted(files)},
    }  # fmt: skip
    data = (json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode("utf-8")
    (directory / "manifest.json").write_bytes(data)
    try:
        token = _sign(pki_dir, data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"cannot sign the evidence manifest: {exc}") from exc
    if token is not None:
        (directory / "manifest.jws").write_text(token + "\n", encoding="ascii")
        result.signed = True
    result.files = ["manifest.json", *(["manifest.jws"] if token else []), *sorted(files)]
    return result
