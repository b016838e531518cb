"""An agency's signed receipts, kept in the audit log and checked by the offline verifier; and the
pull pages a company's records came in, found for its bundle however big the page.

The hub pushes licences to the sandbox 消防支队 (XFZD), which signs its receipts. The receipt
entry in the hash chain keeps the agency's signatures, so an evidence bundle proves a delivery on
the agency's word and not only on the hub's. Whoever runs the hub can rewrite its whole chain and
sign the bundle with the hub's key; what they cannot do is make the agency's signature cover a
receipt the agency never gave.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from certs.sealer import DropSeal
from hub import audit
from hub.db import session_scope
from hub.evidence import export_evidence
from hub.evidence_verify import verify
from hub.intake import RawRecord, import_licences
from hub.models import AuditEntry
from hub.push import push_agency
from hub.sync import pull_agency
from sandbox.filedrop_agencies import DIALECTS
from tests.helpers import grant, make_uscc
from tests.security.conftest import XFZD

GRANTS = [grant(61), grant(62)]  # 餐饮: both are routed to the fire brigade


@pytest.fixture
def delivered(xfzd, tmp_path):
    """A hub that delivered GRANTS to XFZD in one signed batch, and a maker of its bundles."""
    running, hub = xfzd
    runtime = hub()
    records = [RawRecord(n, g, json.dumps(g, ensure_ascii=False)) for n, g in enumerate(GRANTS, 1)]
    with session_scope(runtime.engine) as session:
        import_licences(session, records, runtime.registry, actor="cli:grants.jsonl")
    adapter = runtime.adapter_for(XFZD)
    try:
        assert push_agency(runtime.engine, runtime.agency(XFZD), adapter).delivered == len(GRANTS)
    finally:
        adapter.close()

    def bundle(name: str) -> Path:
        with session_scope(runtime.engine) as session:
            export_evidence(session, tmp_path / name, licence=GRANTS[0]["XK_WSH"], pki_dir=runtime.settings.pki_dir)
        return tmp_path / name

    return runtime, bundle


def _receipt_entry(session) -> AuditEntry:
    (entry,) = session.exec(select(AuditEntry).where(AuditEntry.action == "delivery.receipt")).all()
    return entry


def test_a_bundle_proves_the_delivery_by_the_agencys_own_signature(delivered, pki):
    runtime, bundle = delivered
    with session_scope(runtime.engine) as session:
        detail = _receipt_entry(session).detail
    assert len(detail["agency_signatures"]) == 1  # one batch, one signed receipt
    assert [r["licence"] for r in detail["receipts"]] == [g["XK_WSH"] for g in GRANTS]

    facts, problems = verify(bundle("bundle"), pki.ca_cert)

    assert problems == []
    assert "2 delivery receipts proved by the agency's signature, 0 logged by the hub alone" in facts


def _ack_id_changed(entry: AuditEntry, pki) -> dict:
    detail = json.loads(json.dumps(entry.detail))
    detail["receipts"][0]["ack_id"] = "XFZD-FORGED-1"
    return detail


def _backdated(entry: AuditEntry, pki) -> dict:
    detail = json.loads(json.dumps(entry.detail))
    detail["receipts"][0]["received_at"] = "2026-01-02T03:04:05+00:00"
    return detail


def _receipt_signed_by_the_hub(entry: AuditEntry, pki) -> dict:
    """The operator writes the receipt it wants and signs it with the key it has: the hub's."""
    detail = json.loads(json.dumps(entry.detail))
    detail["receipts"][0]["ack_id"] = "XFZD-FORGED-1"
    acks = [{k: r[k] for k in ("message_id", "ack_id", "received_at", "digest", "duplicate")} for r in detail["receipts"]]
    body = json.dumps({"batch_id": "HUB-XFZD-forged", "status": "accepted", "acks": acks, "errors": []}).encode()
    detail["agency_signatures"] = [DropSeal.from_pki(pki.root, own="hub", peer=XFZD, encrypt=False)
                                   .sign_receipt(body).decode("ascii")]  # fmt: skip
    return detail


def _receipt_signed_with_the_agencys_tls_key(entry: AuditEntry, pki) -> dict:
    """A stolen TLS client key (EKU clientAuth only) has digitalSignature and the agency's CN, but
    the hub never accepts it as the agency's signature: neither may the offline verifier."""
    from certs.dropseal import RECEIPT_TYPE, seal_manifest
    from certs.pki import load_certificate, load_private_key

    detail = json.loads(json.dumps(entry.detail))
    detail["receipts"][0]["ack_id"] = "XFZD-FORGED-1"
    acks = [{k: r[k] for k in ("message_id", "ack_id", "received_at", "digest", "duplicate")} for r in detail["receipts"]]
    body = json.dumps({"batch_id": "HUB-XFZD-forged", "status": "accepted", "acks": acks, "errors": []}).encode()
    tls = pki.party(XFZD)
    detail["agency_signatures"] = [seal_manifest(body, signing_cert=load_certificate(tls.client_cert),
                                                 signing_key=load_private_key(tls.client_key),
                                                 content_type=RECEIPT_TYPE)]  # fmt: skip
    return detail


@pytest.mark.parametrize(("rewrite", "named"), [
    (_ack_id_changed, "XFZD did not sign the receipt of message"),
    (_backdated, "XFZD did not sign the receipt of message"),
    (_receipt_signed_by_the_hub, "signed by 'HUB', not by the agency"),
    (_receipt_signed_with_the_agencys_tls_key, "the signer's certificate may not sign documents"),
])  # fmt: skip
def test_a_receipt_rewritten_by_whoever_runs_the_hub_is_caught_though_the_chain_holds(delivered, pki, rewrite, named):
    runtime, bundle = delivered
    with session_scope(runtime.engine) as session:
        forged = _receipt_entry(session)
        forged.detail = rewrite(forged, pki)
        prev = audit.GENESIS
        for entry in session.exec(select(AuditEntry).order_by(AuditEntry.id)).all():  # the whole chain re-hashed
            entry.prev_hash, entry.entry_hash = prev, audit.entry_hash(
                prev, at=audit.stamp_of(entry.at), actor=entry.actor, action=entry.action, subject=entry.subject,
                detail=entry.detail, payload_digest=entry.payload_digest)  # fmt: skip
            prev = entry.entry_hash
            session.add(entry)
        session.commit()
        assert audit.verify_chain(session)[1] is None  # the hub's own check cannot tell

    facts, problems = verify(bundle("forged"), pki.ca_cert)

    assert [p for p in problems if named in p] and all(p.startswith(f"entry {forged.id}: ") for p in problems), problems
    assert not any("signature does not verify" in p or "does not match its hash" in p for p in problems)


def test_a_companys_record_deep_in_a_big_drop_page_brings_its_page_into_the_bundle(xfzd, pki, tmp_path):
    """A pull page's audit entry names every record it carried (it named the first 1,000): a bundle
    selects page entries by those names, and a drop page holds up to 5,000 records."""
    running, hub = xfzd
    runtime = hub(chunk_records=5000)
    for n in range(1200):
        running.book.add_penalty(subject_name=f"天津大批{n}号有限公司", uscc=make_uscc(80_000 + n))
    running.agency.write_rows(iter([DIALECTS[XFZD].render_penalty(p, {}) for p in running.book.penalties]))
    adapter = runtime.adapter_for(XFZD)
    try:
        assert pull_agency(runtime.engine, runtime.agency(XFZD), adapter).pages == 1
    finally:
        adapter.close()
    last = make_uscc(80_000 + 1199)
    with session_scope(runtime.engine) as session:
        export_evidence(session, tmp_path / "bundle", company=last, pki_dir=runtime.settings.pki_dir)
    entries = [json.loads(line) for line in (tmp_path / "bundle" / "entries.jsonl").read_text("utf-8").splitlines()]
    assert [e["detail"]["records"] for e in entries if e["action"] == "pull.page"] == [1200]
    assert verify(tmp_path / "bundle", pki.ca_cert)[1] == []
