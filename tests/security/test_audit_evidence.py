"""`hub audit verify` and `hub audit export`, checked by the stand-alone offline verifier.

The log is the real one: licences imported, delivered over mTLS (and WS-Security to DSJ) and
violations pulled back from sandbox agencies on 127.0.0.1, plus a reviewer's lookup appended the
way the reviewer pages do. Tampering is done the way an intruder would: straight in the database file, or in
the exported bundle's bytes.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.soap import reset_clients
from certs.pki import PkiLayout
from hub import audit
from hub.cli import app
from hub.db import session_scope
from hub.evidence_verify import main as verify_bundle
from hub.intake import RawRecord, import_licences
from hub.operations import sync_agencies
from hub.runtime import HubRuntime
from hub.settings import Settings
from sandbox.cluster import start_sandbox
from tests.helpers import REPO, grant

CODES = ["JJZD", "GSJ", "DSJ"]


@dataclass
class Hub:
    data_dir: Path
    pki: PkiLayout
    uscc: str  # the company with licences, receipts, pulled violations and a reviewer lookup
    other_uscc: str
    licence: str

    def env(self, data_dir: Path | None = None) -> dict[str, str]:
        return {"HUB_DATA_DIR": str(data_dir or self.data_dir), "HUB_PKI_DIR": str(self.pki.root)}

    def copy(self, target: Path) -> Path:
        """A copy of the hub's data directory an intruder may tamper with."""
        shutil.copytree(self.data_dir, target)
        return target


def _records(*grants: dict) -> list[RawRecord]:
    return [RawRecord(n, g, json.dumps(g, ensure_ascii=False)) for n, g in enumerate(grants, start=1)]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, pki) -> Hub:
    root = tmp_path_factory.mktemp("evidence")
    road = dict(approval_item="NK-JT-003", approval_item_name="道路货物运输经营许可", industry="道路运输")
    mine, other = grant(41, **road), grant(42, **road)
    with start_sandbox(root / "sandbox", codes=CODES, pki_dir=pki.root) as sandbox, \
            pytest.MonkeyPatch.context() as env:
        for name, value in sandbox.env.items():  # DSJ's WS-Security password: its credentials reference
            env.setenv(name, value)
        for book in sandbox.books.values():
            book.add_penalty(subject_name=mine["XK_XDR_MC"], uscc=mine["XK_XDR_SHXYM"])
            book.add_penalty(subject_name=other["XK_XDR_MC"], uscc=other["XK_XDR_SHXYM"])
        settings = Settings(data_dir=root / "hub", database_url=None, broker_url=None, pki_dir=pki.root)
        runtime = HubRuntime(settings, overrides=sandbox.overrides)
        try:
            runtime.init_database()
            with session_scope(runtime.engine) as session:
                import_licences(session, _records(mine, other), runtime.registry, actor="cli:grants.jsonl")
            assert all(ok for _, ok in sync_agencies(runtime, CODES)), "the sandbox sync must succeed"
            changed = {**mine, "XK_NR": mine["XK_NR"] + "（变更）", "lifecycle": "changed",
                       "lifecycle_date": "2026-04-01"}  # fmt: skip
            with session_scope(runtime.engine) as session:
                import_licences(session, _records(changed), runtime.registry, actor="cli:changes.jsonl")
                audit.append(session, actor="reviewer:li.wei", action="review.history",
                             subject=f"company:{mine['XK_XDR_SHXYM']}", detail={"case": "NK-2026-0042"})  # fmt: skip
        finally:
            runtime.dispose()
            reset_clients()
    return Hub(root / "hub", pki, mine["XK_XDR_SHXYM"], other["XK_XDR_SHXYM"], mine["XK_WSH"])


def _hub(hub: Hub, *args: str, data_dir: Path | None = None):
    return CliRunner().invoke(app, list(args), env=hub.env(data_dir), catch_exceptions=False)


def _entries(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in (bundle / "entries.jsonl").read_text(encoding="utf-8").splitlines()]


# --- hub audit verify -------------------------------------------------------------------------
def test_verify_proves_the_chain_intact_with_its_length(hub):
    result = _hub(hub, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert "intact" in result.output
    count = int(result.output.split("intact:")[1].split()[0])
    assert count >= 10  # licences, receipts, pull pages, the change, the reviewer's lookup


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("UPDATE audit_log SET detail = json_set(detail, '$.case', 'NK-2026-9999') WHERE action = 'review.history'",
         "altered"),
        ("UPDATE audit_log SET actor = 'hub' WHERE id = (SELECT min(id) FROM audit_log)", "altered"),
        ("DELETE FROM audit_log WHERE id = (SELECT min(id) + 2 FROM audit_log)", "removed or inserted"),
    ],
    ids=["reviewer case changed", "first entry's actor changed", "an entry deleted"],
)  # fmt: skip
def test_verify_after_tampering_names_the_first_altered_entry(hub, tmp_path, tamper, reason):
    data_dir = hub.copy(tmp_path / "hub")
    with sqlite3.connect(data_dir / "hub.sqlite3") as db:
        first, last = db.execute("SELECT min(id), max(id) FROM audit_log").fetchone()
        db.execute(tamper)
        expected = {"review.history": last, "first": first, "deleted": first + 3}
    result = CliRunner().invoke(app, ["audit", "verify"], env=hub.env(data_dir))
    assert result.exit_code == 1
    key = "review.history" if "review" in tamper else ("first" if "actor" in tamper else "deleted")
    assert f"BROKEN at entry {expected[key]}:" in result.stderr and reason in result.stderr


# --- hub audit export + the offline verifier ---------------------------------------------------
def test_company_bundle_holds_the_evidence_and_verifies_offline(hub, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    result = _hub(hub, "audit", "export", "--company", hub.uscc, str(bundle))
    assert result.exit_code == 0, result.output
    assert "signed with the hub signing key" in result.output

    actions = {e["action"] for e in _entries(bundle)}
    assert {"licence.granted", "licence.changed", "delivery.receipt", "pull.page", "review.history"} <= actions
    subjects = " ".join(e["subject"] for e in _entries(bundle))
    assert hub.other_uscc not in json.dumps(_entries(bundle), ensure_ascii=False)  # another company stays out
    assert f"company:{hub.uscc}" in subjects
    revisions = (bundle / "licence-revisions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(revisions) == 2  # the grant and its change
    violations = (bundle / "violation-revisions.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(v)["agency"] for v in violations} == set(CODES)
    receipts = [json.loads(r) for r in (bundle / "receipts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["agency"] for r in receipts if r["ack_id"]} >= {"JJZD", "GSJ", "DSJ"}
    certificates = {p.name for p in (bundle / "certificates").iterdir()}
    assert {"ca.pem", "hub-signing.pem", "JJZD-server.pem", "GSJ-server.pem"} <= certificates
    assert not any(p.suffix == ".key" for p in bundle.rglob("*"))  # no private key leaves the PKI
    # the chain in the bundle is exactly the one the export verified, up to the head it names
    chain = [json.loads(line) for line in (bundle / "chain.jsonl").read_text(encoding="utf-8").splitlines()]
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["chain"]["checked"] == len(chain) and manifest["chain"]["head_id"] == chain[-1]["id"]
    assert f"{len(chain)} chain links" in result.output

    assert verify_bundle([str(bundle), "--ca", str(hub.pki.ca_cert), "--require-signature"]) == 0
    out = capsys.readouterr().out
    assert "evidence intact" in out and "signed by HUB" in out


def test_licence_bundle_verifies_and_holds_only_that_licence(hub, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert _hub(hub, "audit", "export", "--licence", hub.licence, str(bundle)).exit_code == 0
    entries = _entries(bundle)
    assert {e["action"] for e in entries} >= {"licence.granted", "delivery.receipt"}
    # receipts are audited one entry per pushed batch; such an entry is in the bundle because it lists this licence
    assert all(e["subject"] in (f"licence:{hub.licence}",) or e["subject"].startswith("delivery:")
               or hub.licence in {r["licence"] for r in e["detail"].get("receipts", [])} for e in entries)  # fmt: skip
    assert any(hub.licence in {r["licence"] for r in e["detail"].get("receipts", [])} for e in entries)
    assert verify_bundle([str(bundle), "--ca", str(hub.pki.ca_cert)]) == 0


@pytest.fixture
def bundle(hub, tmp_path) -> Path:
    path = tmp_path / "bundle"
    assert _hub(hub, "audit", "export", "--company", hub.uscc, str(path)).exit_code == 0
    return path


def _flip(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new, 1))


def _first_licence_payload_year(bundle: Path) -> None:
    _flip(bundle / "licence-revisions.jsonl", b'"XK_JDRQ": "2026', b'"XK_JDRQ": "2027')


def _an_entry_subject(bundle: Path) -> None:
    _flip(bundle / "entries.jsonl", b'"actor": "cli:grants.jsonl"', b'"actor": "cli:grants.jsonX"')


def _an_entry_and_the_manifest_digest(bundle: Path) -> None:
    _an_entry_subject(bundle)
    import hashlib

    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["entries.jsonl"] = hashlib.sha256((bundle / "entries.jsonl").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n",
                                          encoding="utf-8")  # fmt: skip


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (_first_licence_payload_year, ["licence-revisions.jsonl: its SHA-256 differs",
                                       "licence-revisions.jsonl: 津南审批许字〔2026〕T00041号 version 1: the payload does not match"]),
        (_an_entry_subject, ["entries.jsonl: its SHA-256 differs", "its content does not match its hash"]),
        (_an_entry_and_the_manifest_digest, ["manifest.json: differs from the manifest that was signed",
                                             "its content does not match its hash"]),
    ],
    ids=["one byte of a licence payload", "one byte of an entry", "an entry, with the manifest re-digested"],
)  # fmt: skip
def test_the_verifier_names_what_was_altered(bundle, hub, capsys, tamper, named):
    tamper(bundle)
    assert verify_bundle([str(bundle), "--ca", str(hub.pki.ca_cert)]) == 1
    out = capsys.readouterr().out
    for text in named:
        assert text in out, out
    assert "evidence NOT intact" in out


def test_the_verifier_refuses_a_bundle_signed_under_another_ca(bundle, foreign_pki, capsys):
    assert verify_bundle([str(bundle), "--ca", str(foreign_pki.ca_cert)]) == 1
    assert "the signer was not issued by the CA given with --ca" in capsys.readouterr().out


def test_the_verifier_runs_alone_without_the_hub(bundle, hub, tmp_path):
    # copied elsewhere and run in isolated mode: nothing of the hub is importable
    alone = tmp_path / "elsewhere" / "evidence_verify.py"
    alone.parent.mkdir()
    shutil.copyfile(REPO / "hub" / "evidence_verify.py", alone)
    proc = subprocess.run([sys.executable, "-I", str(alone), str(bundle), "--ca", str(hub.pki.ca_cert)],
                          cwd=alone.parent, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "evidence intact" in proc.stdout
    source = alone.read_text(encoding="utf-8")
    assert "from hub" not in source and "import hub" not in source


def test_export_from_a_broken_chain_is_refused(hub, tmp_path):
    data_dir = hub.copy(tmp_path / "hub")
    with sqlite3.connect(data_dir / "hub.sqlite3") as db:
        db.execute("UPDATE audit_log SET subject = 'licence:forged' WHERE id = (SELECT max(id) FROM audit_log)")
    result = CliRunner().invoke(app, ["audit", "export", "--company", hub.uscc,
                                                      str(tmp_path / "bundle")], env=hub.env(data_dir))  # fmt: skip
    assert result.exit_code == 1
    assert "audit chain broken at entry" in result.stderr
    assert not (tmp_path / "bundle").exists()


def _certificate(*, digital_signature: bool, content_commitment: bool, purposes=None):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "南开区行政审批局")])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.KeyUsage(digital_signature=digital_signature, content_commitment=content_commitment,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True))  # fmt: skip
    if purposes:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_a_signing_certificate_with_non_repudiation_alone_may_sign_evidence_a_tls_one_may_not():
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from hub.evidence_verify import may_sign_documents

    assert may_sign_documents(_certificate(digital_signature=False, content_commitment=True))
    assert may_sign_documents(_certificate(digital_signature=True, content_commitment=False))
    assert not may_sign_documents(_certificate(digital_signature=False, content_commitment=False))
    assert not may_sign_documents(_certificate(digital_signature=True, content_commitment=False,
                                               purposes=[ExtendedKeyUsageOID.CLIENT_AUTH]))
