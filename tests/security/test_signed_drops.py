"""Sign-only file drops through the hub, as deployed: ``seal = "sign"`` in the agency's ``[filedrop]``,
its signing certificate in ``[tls]``, the hub's own signing pair from the PKI. The sandbox 消防支队
(XFZD: GBK CSV over SFTP on 127.0.0.1) signs its manifests and leaves its files plain.

A batch whose data file differs from the signed manifest, whose manifest differs from what was
signed, or that was signed by anyone but the agency's current certificate under our CA is moved to
failed/ with the reason and quarantined whole: nothing of it is stored. A sign-only batch bigger
than a page is loaded once. And what the hub signs, another JOSE library (jwcrypto) verifies.
A licence batch's receipt counts only with the agency's signature over that very receipt, typed as
a receipt: unsigned, altered, signed by anyone else, or signed as a manifest, it marks nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws
from sqlmodel import func, select

from adapters.base import OutboundMessage
from certs.pki import issue_leaf, load_certificate, load_private_key, write_certificate
from certs.sealer import DropSeal
from contracts.mapping import licence_to_native
from contracts.records import LicenceGrant
from hub.db import session_scope
from hub.errors import FatalError
from hub.models import InboundBatch, QuarantinedRecord, Violation
from hub.operations import sync_agencies
from hub.runtime import HubRuntime
from hub.sync import pull_agency
from sandbox.core import Fault
from sandbox.filedrop_agencies import DIALECTS
from tests.helpers import grant, make_uscc
from tests.security.conftest import XFZD, XFZD_CHUNK

CODE, CHUNK, COUNT = XFZD, XFZD_CHUNK, 50


def publish(running, n: int = 3) -> tuple[str, Path]:
    """A fresh signed penalty batch of ``n`` records; its id and its data file."""
    for i in range(n):
        running.book.add_penalty(subject_name=f"天津签名{i}号有限公司", uscc=make_uscc(70_000 + i))
    batch_id = running.publish()
    (data_file,) = [p for p in (running.root / "from_agency" / batch_id).iterdir() if p.suffix == ".csv"]
    return batch_id, data_file


def licence_messages(runtime: HubRuntime, prefix: str, n: int) -> list[OutboundMessage]:
    """``n`` licence grants as the hub sends them to XFZD, message ids ``<prefix>-1`` on."""
    mapping = runtime.agency(CODE).licence_mapping
    return [OutboundMessage(f"{prefix}-{i}", grant(i)["XK_WSH"],
                            licence_to_native(LicenceGrant.model_validate(grant(i)), mapping))
            for i in range(1, n + 1)]  # fmt: skip


def jwcrypto_verified(token: str) -> tuple[dict, x509.Certificate, bytes]:
    """The header, x5c leaf and payload of a compact JWS that jwcrypto verified with the leaf's key."""
    jws = jc_jws.JWS()
    jws.deserialize(token)
    leaf = x509.load_der_x509_certificate(base64.b64decode(jws.jose_header["x5c"][0]))
    jws.verify(jc_jwk.JWK.from_pem(leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)))  # fmt: skip
    return jws.jose_header, leaf, jws.payload


# --- refusals: the whole batch to failed/ with the reason, nothing stored ------------------------------
def _data_file_changed(running, pki, foreign_pki, tmp_path):
    batch_id, data_file = publish(running)
    data = bytearray(data_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the digest can tell
    data_file.write_bytes(bytes(data))
    return batch_id, None


def _manifest_changed_to_match(running, pki, foreign_pki, tmp_path):
    batch_id, data_file = publish(running)
    data = data_file.read_bytes().replace("天津签名0号".encode("gbk"), "天津篡改0号".encode("gbk"))
    data_file.write_bytes(data)
    manifest_path = data_file.with_name("manifest.json")
    manifest = json.loads(manifest_path.read_bytes())
    manifest["files"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest_path.write_bytes(json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8"))
    return batch_id, None


def _signature_changed(running, pki, foreign_pki, tmp_path):
    batch_id, data_file = publish(running)
    jws = data_file.with_name("manifest.jws")
    head, payload, signature = jws.read_text("ascii").split(".")
    jws.write_text(f"{head}.{payload}.{signature[::-1]}", "ascii")
    return batch_id, None


def _unsigned(running, pki, foreign_pki, tmp_path):
    batch_id, data_file = publish(running)
    data_file.with_name("manifest.jws").unlink()
    return batch_id, None


def _signed_as_a_receipt(running, pki, foreign_pki, tmp_path):
    """The agency's own key over the very manifest, but typed as a receipt: not its signature of a batch."""
    batch_id, data_file = publish(running)
    signature = running.agency.seal.sign_receipt(data_file.with_name("manifest.json").read_bytes())
    data_file.with_name("manifest.jws").write_bytes(signature)
    return batch_id, None


def _signer_from_another_ca(running, pki, foreign_pki, tmp_path):
    running.agency.seal = DropSeal.from_pki(foreign_pki.root, own=CODE, peer="hub", encrypt=False)
    return publish(running)[0], None


def _signer_certificate_expired(running, pki, foreign_pki, tmp_path):
    """Our CA issued the agency's certificate, the one on file, and it expired a month ago."""
    ca_cert, ca_key = load_certificate(pki.ca_cert), load_private_key(pki.ca_key)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, DIALECTS[CODE].name),
                         x509.NameAttribute(NameOID.COMMON_NAME, CODE)])  # fmt: skip
    month_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cert, key = issue_leaf("signing", subject, ca_cert=ca_cert, ca_key=ca_key, now=month_ago, validity_days=1)
    on_file = tmp_path / "xfzd-expired-signing.pem"
    write_certificate(on_file, cert)
    running.agency.seal = DropSeal(cert, key, ca_cert, load_certificate(pki.hub.signing_cert), encrypt=False)
    return publish(running)[0], on_file


REFUSALS = {
    # case: (what the agency or an attacker does, words of the reason)
    "data file changed": (_data_file_changed, "does not match the manifest's"),
    "manifest changed to match": (_manifest_changed_to_match,
                                  "bad_signature: manifest.jws signs a different manifest than manifest.json"),
    "signature changed": (_signature_changed, "bad_signature: manifest signature does not verify"),
    "unsigned": (_unsigned, "unknown_signer: batch is not signed"),
    "signed as a receipt": (_signed_as_a_receipt, "malformed_token: the token signs a receipt"),
    "signer from another CA": (_signer_from_another_ca, "was not issued by a trusted CA"),
    "signer certificate expired": (_signer_certificate_expired, "expired_certificate: signer certificate expired"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_sign_only_drop_that_does_not_check_out_is_refused_whole_and_nothing_loaded(xfzd, pki, foreign_pki,
                                                                                      tmp_path, case):  # fmt: skip
    running, hub = xfzd
    make, words = REFUSALS[case]
    batch_id, agency_cert = make(running, pki, foreign_pki, tmp_path)
    runtime = hub(agency_cert)

    lines = list(sync_agencies(runtime, [CODE], push=False))

    assert "1 quarantined" in lines[0][0], lines
    with session_scope(runtime.engine) as session:
        assert session.exec(select(func.count()).select_from(Violation)).one() == 0
        held = session.exec(select(QuarantinedRecord)).all()
        assert session.exec(select(InboundBatch)).all() == []
    assert [q.record_ref for q in held] == [batch_id]
    assert words in json.dumps(held[0].reasons, ensure_ascii=False)
    failed = running.root / "failed"
    assert (failed / batch_id).is_dir() and words in (failed / f"{batch_id}.error").read_text("utf-8")
    assert list((running.root / "processed").iterdir()) == []


# --- a big one loads once ------------------------------------------------------------------------------
def test_a_sign_only_drop_bigger_than_a_page_is_streamed_and_loaded_once(xfzd):
    running, hub = xfzd
    for n in range(COUNT):
        running.book.add_penalty(subject_name=f"天津签名分页{n}号有限公司", uscc=make_uscc(71_000 + n))
    rows = [DIALECTS[CODE].render_penalty(p, {}) for p in running.book.penalties]
    batch_id = running.agency.write_rows(iter(rows))  # as the benchmark writes a million rows
    runtime = hub()

    def pull():
        adapter = runtime.adapter_for(CODE)
        try:
            return pull_agency(runtime.engine, runtime.agency(CODE), adapter)
        finally:
            adapter.close()

    first, again = pull(), pull()

    assert (first.pages, first.created, first.quarantined) == (-(-COUNT // CHUNK), COUNT, 0)
    assert (again.created, again.updated, again.quarantined) == (0, 0, 0)
    with session_scope(runtime.engine) as session:
        assert session.exec(select(func.count()).select_from(Violation)).one() == COUNT
        assert [(b.batch_id, b.records) for b in session.exec(select(InboundBatch)).all()] == [(batch_id, COUNT)]
    assert [p.name for p in (running.root / "processed").iterdir()] == [batch_id]


# --- another JOSE implementation checks what the hub signed --------------------------------------------
def test_jwcrypto_verifies_a_sign_only_drop_the_hub_wrote_and_its_plain_files_match(xfzd, pki):
    running, hub = xfzd
    runtime = hub()
    messages = licence_messages(runtime, "signed", 3)
    adapter = runtime.adapter_for(CODE)
    try:
        receipts = adapter.deliver(messages)  # the agency verified it with our code: see the sandbox
    finally:
        adapter.close()
    assert [r.digest for r in receipts] == [m.digest for m in messages]
    (batch,) = (running.root / "agency_archive").iterdir()

    header, leaf, payload = jwcrypto_verified((batch / "manifest.jws").read_text("ascii"))
    leaf.verify_directly_issued_by(load_certificate(pki.ca_cert))  # our CA, not one the token brought
    assert header["alg"] == "ES256" and leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "HUB"
    assert header["x5t#S256"] == base64.urlsafe_b64encode(leaf.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
    assert payload == (batch / "manifest.json").read_bytes()

    signed = json.loads(payload)
    (entry,) = signed["files"]
    data = (batch / entry["name"]).read_bytes()  # plain: no .jwe
    assert not entry["name"].endswith(".jwe")
    assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    text = data.decode(signed["encoding"])
    assert signed["encoding"] == "gbk" and all(m.message_id in text for m in messages)

    # and the agency's signature over its receipt, which the hub checked before taking it
    receipts_dir = running.root / "receipts"
    header, signer, payload = jwcrypto_verified((receipts_dir / f"{signed['batch_id']}.jws").read_text("ascii"))
    signer.verify_directly_issued_by(load_certificate(pki.ca_cert))
    assert header["cty"] == "receipt+json"
    assert signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CODE
    assert payload == (receipts_dir / f"{signed['batch_id']}.json").read_bytes()


# --- receipts: only the agency's signature over the very receipt marks a delivery ------------------------
def _receipt_for(batch_id: str, messages: list[OutboundMessage]) -> bytes:
    """A receipt acknowledging every message with the right digest: only its signature can give it away."""
    acks = [{"message_id": m.message_id, "ack_id": f"forged-{n}", "digest": m.digest, "duplicate": False,
             "received_at": dt.datetime.now(dt.UTC).isoformat()} for n, m in enumerate(messages)]  # fmt: skip
    return json.dumps({"batch_id": batch_id, "status": "accepted", "acks": acks, "errors": []}).encode("utf-8")


def _agency_seal(pki):
    return DropSeal.from_pki(pki.root, own=CODE, peer="hub", encrypt=False)


def _no_signature(pki, body):
    return body, None


def _altered_after_signing(pki, body):
    return body.replace(b"forged-0", b"forged-9"), _agency_seal(pki).sign_receipt(body)


def _signed_by_the_hub(pki, body):
    return body, DropSeal.from_pki(pki.root, own="hub", peer=CODE, encrypt=False).sign_receipt(body)


def _the_agency_signed_it_as_a_manifest(pki, body):
    return body, _agency_seal(pki).sign_manifest(body)["manifest.jws"]


FORGED_RECEIPTS = {
    # case: (what is written into receipts/, words of the refusal)
    "no signature": (_no_signature, "unknown_signer: the receipt is not signed"),
    "altered after signing": (_altered_after_signing, "bad_signature: the .jws signs a different receipt"),
    "signed by the hub": (_signed_by_the_hub, "signed by 'HUB', expected 'XFZD'"),
    "the agency's manifest signature": (_the_agency_signed_it_as_a_manifest, "signs a manifest"),
}


def _answer_for_the_agency(running, write) -> threading.Thread:
    """Once the agency has taken the next licence batch, ``write(batch_id, receipts_dir)`` answers it."""

    def answer() -> None:
        archive = running.root / "agency_archive"
        while not any(archive.iterdir()):
            time.sleep(0.02)
        (batch,) = archive.iterdir()
        write(json.loads((batch / "manifest.json").read_bytes())["batch_id"], running.root / "receipts")

    running.book.inject(Fault.TIMEOUT)  # the agency takes the batch and answers nothing itself
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("case", list(FORGED_RECEIPTS))
def test_a_receipt_the_agency_did_not_sign_as_its_receipt_is_refused_and_acknowledges_nothing(xfzd, pki, case):
    running, hub = xfzd
    runtime = hub(receipt_timeout=4)  # how long an unsigned receipt waits for its signature
    messages = licence_messages(runtime, "forged", 2)
    forge, words = FORGED_RECEIPTS[case]

    def answer_in_its_place(batch_id: str, receipts: Path) -> None:
        body, signature = forge(pki, _receipt_for(batch_id, messages))
        if signature is not None:
            (receipts / f"{batch_id}.jws").write_bytes(signature)
        (receipts / f"{batch_id}.json").write_bytes(body)

    forger = _answer_for_the_agency(running, answer_in_its_place)
    adapter = runtime.adapter_for(CODE)
    try:
        with pytest.raises(FatalError, match="receipt receipts/HUB-XFZD-.*json refused") as refused:
            adapter.deliver(messages)
    finally:
        adapter.close()
        forger.join(timeout=10)
    assert words in str(refused.value)


def test_a_receipt_written_before_its_signature_is_waited_for_and_its_signature_kept(xfzd, pki):
    running, hub = xfzd
    runtime = hub()
    messages = licence_messages(runtime, "late", 2)
    signed: list[bytes] = []

    def answer_receipt_first(batch_id: str, receipts: Path) -> None:
        body = _receipt_for(batch_id, messages)
        (receipts / f"{batch_id}.json").write_bytes(body)
        time.sleep(0.5)  # several of the hub's polls see the receipt without its signature
        signed.append(_agency_seal(pki).sign_receipt(body))
        (receipts / f"{batch_id}.jws").write_bytes(signed[0])

    agency = _answer_for_the_agency(running, answer_receipt_first)
    adapter = runtime.adapter_for(CODE)
    try:
        receipts = adapter.deliver(messages)
    finally:
        adapter.close()
        agency.join(timeout=10)
    assert [(r.message_id, r.ack_id) for r in receipts] == [(m.message_id, f"forged-{n}") for n, m in enumerate(messages)]
    assert {r.agency_signature for r in receipts} == {signed[0].decode("ascii")}  # what the hub keeps as evidence
