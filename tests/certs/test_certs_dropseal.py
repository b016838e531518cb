"""Signed and encrypted drops: round trip, checked by another JOSE library, and every refusal."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import pickle

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwe as jc_jwe
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws

from certs.dropseal import (
    MAX_FILE_BYTES,
    MAX_MANIFEST_BYTES,
    Reason,
    decrypt_file,
    encrypt_file,
    open_manifest,
    seal_manifest,
    verify_digest,
    verify_manifest,
)
from certs.pki import load_certificate, load_private_key
from certs.sealer import DropSeal
from hub.errors import ConfigurationError, RefusedInput

MANIFEST = json.dumps(
    {"batch_id": "XK-20250301-0001", "files": [{"name": "许可.csv", "sha256": "0" * 64, "size": 3}]},
    ensure_ascii=False, indent=2,
).encode()  # fmt: skip
DATA = "统一社会信用代码,行政许可决定文书号\n91120104MA05XXXX1X,津南开许字〔2025〕1号\n".encode()


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signer(layout, party):
    files = layout.party(party)
    return load_certificate(files.signing_cert), load_private_key(files.signing_key)


@pytest.fixture
def hub_seal(pki):
    return DropSeal.from_pki(pki.root, own="hub", peer="SCJG")


@pytest.fixture
def agency_seal(pki):
    return DropSeal.from_pki(pki.root, own="SCJG", peer="hub")


def test_a_sealed_drop_round_trips_between_hub_and_agency(hub_seal, agency_seal):
    stored_name, stored = hub_seal.seal_file("许可.csv", DATA)
    sidecars = hub_seal.sign_manifest(MANIFEST)
    assert stored_name == "许可.csv.jwe" and DATA not in stored
    assert set(sidecars) == set(agency_seal.sidecars) == {"manifest.jws"}

    agency_seal.verify_manifest(MANIFEST, sidecars)
    assert agency_seal.unseal_file(stored_name, stored) == DATA
    assert agency_seal.last_verified.signer.subject.rfc4514_string().startswith("CN=HUB")

    # and back: the agency's answer is sealed for the hub
    name, answer = agency_seal.seal_file("penalties.csv", DATA)
    hub_seal.verify_manifest(MANIFEST, agency_seal.sign_manifest(MANIFEST))
    assert hub_seal.unseal_file(name, answer) == DATA


def test_dropseal_fits_the_file_drop_seal_protocol(hub_seal):
    drop_manifest = pytest.importorskip("adapters.drop_manifest")
    assert isinstance(hub_seal, drop_manifest.Seal)


# --- acceptance: another implementation checks what the hub produced ------------------------


def test_jwcrypto_verifies_the_hub_signed_manifest_and_decrypts_its_files(pki, hub_seal):
    token = hub_seal.sign_manifest(MANIFEST)["manifest.jws"].decode()
    _, stored = hub_seal.seal_file("许可.csv", DATA)

    # The signer's certificate travels in x5c; jwcrypto checks the signature with its key,
    # cryptography checks that our CA issued it.
    jws = jc_jws.JWS()
    jws.deserialize(token)
    header = jws.jose_header
    assert header["alg"] == "ES256"
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    leaf.verify_directly_issued_by(load_certificate(pki.ca_cert))
    jws.verify(jc_jwk.JWK.from_pem(leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)))  # fmt: skip
    assert jws.payload == MANIFEST

    agency_key = jc_jwk.JWK.from_pem(pki.party("SCJG").signing_key.read_bytes())
    jwe = jc_jwe.JWE()
    jwe.deserialize(stored.decode(), key=agency_key)
    assert jwe.jose_header["alg"] == "ECDH-ES+A256KW" and jwe.jose_header["enc"] == "A256GCM"
    assert jwe.payload == DATA


def test_the_hub_accepts_a_drop_made_by_jwcrypto(pki, hub_seal):
    cert, _ = signer(pki, "SCJG")
    key = jc_jwk.JWK.from_pem(pki.party("SCJG").signing_key.read_bytes())
    jws = jc_jws.JWS(MANIFEST)
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    jws.add_signature(key, alg="ES256", protected=json.dumps({"alg": "ES256", "x5c": x5c}))
    hub_seal.verify_manifest(MANIFEST, {"manifest.jws": jws.serialize(compact=True).encode()})

    hub_pub = jc_jwk.JWK.from_pem(pki.hub.signing_cert.read_bytes())
    jwe = jc_jwe.JWE(DATA, protected=json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}))
    jwe.add_recipient(hub_pub)
    assert hub_seal.unseal_file("penalties.csv.jwe", jwe.serialize(compact=True).encode()) == DATA



def test_tokens_saved_as_text_files_open_as_they_were_sealed(hub_seal, agency_seal):
    # another implementation may write its tokens with a final newline (or CRLF)
    token = hub_seal.sign_manifest(MANIFEST)["manifest.jws"]
    agency_seal.verify_manifest(MANIFEST, {"manifest.jws": token + b"\r\n"})
    assert agency_seal.last_verified.token == token.decode()
    _, stored = hub_seal.seal_file("许可.csv", DATA)
    assert agency_seal.unseal_file("许可.csv.jwe", stored + b"\n") == DATA


# --- refusals -------------------------------------------------------------------------------


def _tampered_payload(pki, foreign_pki):
    h, _, s = seal_manifest(MANIFEST, signing_cert=signer(pki, "SCJG")[0], signing_key=signer(pki, "SCJG")[1]).split(".")
    return f"{h}.{b64u(MANIFEST.replace(b'0001', b'0002'))}.{s}", {}


def _signature_of_another_key(pki, foreign_pki):
    # Our SCJG certificate in the header, but signed by an impostor's key.
    cert, _ = signer(pki, "SCJG")
    forged = seal_manifest(MANIFEST, signing_cert=signer(foreign_pki, "SCJG")[0], signing_key=signer(foreign_pki, "SCJG")[1])
    h, p, s = forged.split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    header["x5c"] = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    h2 = b64u(json.dumps(header).encode())
    return f"{h2}.{p}.{s}", {}


def _signer_from_another_ca(pki, foreign_pki):
    cert, key = signer(foreign_pki, "SCJG")
    return seal_manifest(MANIFEST, signing_cert=cert, signing_key=key), {}


def _another_agency(pki, foreign_pki):
    cert, key = signer(pki, "SWJ")
    return seal_manifest(MANIFEST, signing_cert=cert, signing_key=key), {}


def _client_certificate_not_a_signer(pki, foreign_pki):
    files = pki.party("SCJG")
    return seal_manifest(MANIFEST, signing_cert=load_certificate(files.client_cert),
                         signing_key=load_private_key(files.client_key)), {}  # fmt: skip


def _expired(pki, foreign_pki):
    cert, key = signer(pki, "SCJG")
    return seal_manifest(MANIFEST, signing_cert=cert, signing_key=key), {"now": cert.not_valid_after_utc}


def _not_yet_valid(pki, foreign_pki):
    cert, key = signer(pki, "SCJG")
    return seal_manifest(MANIFEST, signing_cert=cert, signing_key=key), {
        "now": cert.not_valid_before_utc - dt.timedelta(seconds=1)
    }


def _alg_none(pki, foreign_pki):
    cert, _ = signer(pki, "SCJG")
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    return f"{b64u(json.dumps({'alg': 'none', 'x5c': x5c}).encode())}.{b64u(MANIFEST)}.", {}


def _no_x5c(pki, foreign_pki):
    h = b64u(json.dumps({"alg": "ES256", "kid": "SCJG"}).encode())
    return f"{h}.{b64u(MANIFEST)}.{b64u(b'x' * 64)}", {}


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (_tampered_payload, Reason.BAD_SIGNATURE, "does not verify"),
        (_signature_of_another_key, Reason.BAD_SIGNATURE, "does not verify"),
        (_signer_from_another_ca, Reason.UNKNOWN_SIGNER, "not issued by a trusted CA"),
        (_another_agency, Reason.UNKNOWN_SIGNER, "expected 'SCJG'"),
        (_client_certificate_not_a_signer, Reason.UNKNOWN_SIGNER, "not a signing certificate"),
        (_expired, Reason.EXPIRED_CERTIFICATE, "expired"),
        (_not_yet_valid, Reason.EXPIRED_CERTIFICATE, "not valid before"),
        (_alg_none, Reason.MALFORMED, "algorithm 'none'"),
        (_no_x5c, Reason.UNKNOWN_SIGNER, "no signer certificate"),
        (lambda p, f: ("garbage", {}), Reason.MALFORMED, "3 parts"),
        (lambda p, f: ("a.b.c", {}), Reason.MALFORMED, "base64url JSON"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_a_manifest_is_refused_with_a_precise_reason(pki, foreign_pki, make, reason, words):
    token, extra = make(pki, foreign_pki)
    with pytest.raises(RefusedInput) as refused:
        verify_manifest(token, trusted_ca=load_certificate(pki.ca_cert), expected_signer="SCJG", **extra)
    assert refused.value.reason == reason
    assert words in str(refused.value)
    assert pickle.loads(pickle.dumps(refused.value)).reason == reason  # crosses Celery intact


def test_dropseal_refuses_a_batch_whose_manifest_differs_from_the_signed_one(pki, hub_seal, agency_seal):
    sidecars = agency_seal.sign_manifest(MANIFEST)
    with pytest.raises(RefusedInput) as refused:
        hub_seal.verify_manifest(MANIFEST.replace(b"0001", b"0666"), sidecars)
    assert refused.value.reason == Reason.BAD_SIGNATURE


def test_dropseal_refuses_an_unsigned_batch(hub_seal):
    with pytest.raises(RefusedInput) as refused:
        hub_seal.verify_manifest(MANIFEST, {})
    assert refused.value.reason == Reason.UNKNOWN_SIGNER


def test_dropseal_refuses_a_drop_from_the_right_ca_but_the_wrong_agency(pki, hub_seal):
    cert, key = signer(pki, "SWJ")
    with pytest.raises(RefusedInput, match="expected 'SCJG'"):
        hub_seal.verify_manifest(MANIFEST, {"manifest.jws": seal_manifest(MANIFEST, signing_cert=cert, signing_key=key).encode()})


@pytest.mark.parametrize(
    ("name", "mangle", "reason"),
    [
        ("data.csv.jwe", lambda jwe: jwe[:-30] + (b"A" if jwe[-30:-29] != b"A" else b"B") + jwe[-29:], Reason.UNDECRYPTABLE),
        ("data.csv.jwe", lambda jwe: b"not.a.jwe", Reason.MALFORMED),
        ("data.csv", lambda jwe: DATA, Reason.MALFORMED),
    ],
    ids=["tampered ciphertext", "not a JWE", "unencrypted file"],
)
def test_a_damaged_or_unencrypted_file_is_refused(agency_seal, hub_seal, name, mangle, reason):
    _, stored = hub_seal.seal_file("data.csv", DATA)
    with pytest.raises(RefusedInput) as refused:
        agency_seal.unseal_file(name, mangle(stored))
    assert refused.value.reason == reason


def test_a_file_encrypted_for_someone_else_does_not_open(pki):
    stored = encrypt_file(DATA, load_certificate(pki.party("SWJ").signing_cert))
    with pytest.raises(RefusedInput) as refused:
        decrypt_file(stored, load_private_key(pki.party("SCJG").signing_key))
    assert refused.value.reason == Reason.UNDECRYPTABLE
    assert decrypt_file(stored, load_private_key(pki.party("SWJ").signing_key)) == DATA


def test_open_manifest_names_the_signer_for_the_audit_log(pki):
    cert, key = signer(pki, "SCJG")
    verified = open_manifest(seal_manifest(MANIFEST, signing_cert=cert, signing_key=key),
                             trusted_ca=load_certificate(pki.ca_cert), accepted=[cert])  # fmt: skip
    assert verified.payload == MANIFEST and verified.signer == cert
    assert verified.manifest["batch_id"] == "XK-20250301-0001"


def test_digest_helper_refuses_a_mismatch():
    verify_digest(DATA, hashlib.sha256(DATA).hexdigest().upper())
    with pytest.raises(RefusedInput) as refused:
        verify_digest(DATA + b"\n", hashlib.sha256(DATA).hexdigest())
    assert refused.value.reason == Reason.DIGEST_MISMATCH


def test_what_a_sender_may_seal_at_the_limit_the_receiver_opens(pki):
    """joserfc counts base64 characters: limits set in bytes made the receiver refuse files over 48 MiB."""
    cert, key = signer(pki, "hub")
    biggest = bytes(range(256)) * (MAX_FILE_BYTES // 256)
    assert decrypt_file(encrypt_file(biggest, cert), key) == biggest
    with pytest.raises(ConfigurationError, match="exceeds the drop limit"):
        encrypt_file(biggest + b"x", cert)
    manifest = b'{"pad": "' + b"x" * (MAX_MANIFEST_BYTES - 11) + b'"}'
    assert len(manifest) == MAX_MANIFEST_BYTES
    token = seal_manifest(manifest, signing_cert=cert, signing_key=key)
    assert open_manifest(token, trusted_ca=load_certificate(pki.ca_cert)).payload == manifest


def test_dropseal_through_the_file_drop_manifest_steps(pki, hub_seal, agency_seal):
    """The order the file-drop adapter uses: seal, list stored bytes, sign, then verify and unseal."""
    drop_manifest = pytest.importorskip("adapters.drop_manifest")
    stored_name, stored = agency_seal.seal_file("penalties.csv", DATA)
    manifest = drop_manifest.Manifest(
        batch_id="CF-20250301-0001", sequence=1, created=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
        kind="penalties", format="csv", producer="SCJG", files=(drop_manifest.file_entry(stored_name, stored),),
    ).to_bytes()  # fmt: skip
    sidecars = agency_seal.sign_manifest(manifest)

    hub_seal.verify_manifest(manifest, sidecars)
    entry = drop_manifest.Manifest.from_bytes(manifest, where="batch").files[0]
    drop_manifest.verify_file(entry, stored, where="batch")
    assert hub_seal.unseal_file(entry.name, stored) == DATA


def test_dropseal_from_agency_file_references(pki):
    """What the hub builds from an agency's [tls] files: our signing pair, the CA, the agency's certificate."""
    seal = DropSeal.from_files(
        signing_cert=pki.hub.signing_cert, signing_key=pki.hub.signing_key,
        trusted_ca=pki.ca_cert, peer_cert=pki.party("SCJG").signing_cert,
    )  # fmt: skip
    agency = DropSeal.from_pki(pki.root, own="SCJG", peer="hub")
    seal.verify_manifest(MANIFEST, agency.sign_manifest(MANIFEST))
    name, stored = seal.seal_file("licences.csv", DATA)
    assert agency.unseal_file(name, stored) == DATA
