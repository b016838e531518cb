"""DropSeal: the JOSE seal a file-drop adapter takes in its constructor.

It fits ``adapters.drop_manifest.Seal``: the manifest is signed into a ``manifest.jws``
sidecar whose payload is the manifest's exact bytes, and data files are stored as
``<name>.jwe`` encrypted to the peer's signing certificate — or, sign-only
(``encrypt=False``), as they are: the signed manifest's SHA-256 and size of each file then
vouch for it, and the adapter hashes and parses it as a stream, whatever its size. On the
way in, the sidecar must be present, verify against our CA, be signed by the expected peer
with a currently accepted certificate, and carry exactly the manifest that was found next
to it.

The hub seals for agency SCJG with ``DropSeal.from_pki(pki_dir, own="hub", peer="SCJG")``;
the SCJG sandbox seals for the hub with ``own="SCJG", peer="hub"``.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.dropseal import (
    RECEIPT_TYPE,
    Reason,
    VerifiedManifest,
    _refuse,
    decrypt_file,
    encrypt_file,
    open_manifest,
    seal_manifest,
    signer_code,
)
from certs.lifecycle import accepted_certificates, accepted_keys
from certs.pki import PkiLayout, load_certificate, load_certificates, load_private_key
from certs.rotation import accepted_in_file

__all__ = ["JWE_SUFFIX", "JWS_SIDECAR", "DropSeal"]

JWS_SIDECAR = "manifest.jws"
JWE_SUFFIX = ".jwe"


class DropSeal:
    """Signs (and encrypts) outbound drops for one peer; verifies (and decrypts) the peer's drops.

    Args:
        signing_cert: our signing certificate (goes into the JWS ``x5c``).
        signing_key: its key; it also decrypts files the peer encrypted to us.
        trusted_ca: the CA(s) a peer's signing certificate must be issued by.
        peer_cert: the peer's current signing certificate: files are encrypted to it and its
            CN is the only signer accepted.
        peer_accepted: the peer's certificates accepted as signers (current plus those in a
            rotation overlap), or a function of the time returning them; default ``[peer_cert]``.
        decryption_keys: our previous keys still in a rotation overlap.
        clock: returns the current UTC time (tests pass a fixed one).
        encrypt: False for sign-only drops: files are stored plain and an encrypted one is refused.
    """

    sidecars: tuple[str, ...] = (JWS_SIDECAR,)

    def __init__(
        self,
        signing_cert: x509.Certificate,
        signing_key: ec.EllipticCurvePrivateKey,
        trusted_ca: x509.Certificate | Sequence[x509.Certificate],
        peer_cert: x509.Certificate,
        *,
        peer_accepted: Sequence[x509.Certificate] | Callable[[dt.datetime], Sequence[x509.Certificate]] | None = None,
        decryption_keys: Sequence[ec.EllipticCurvePrivateKey] = (),
        clock: Callable[[], dt.datetime] | None = None,
        encrypt: bool = True,
    ) -> None:
        self.encrypts = encrypt
        self._cert = signing_cert
        self._key = signing_key
        self._cas = [trusted_ca] if isinstance(trusted_ca, x509.Certificate) else list(trusted_ca)
        self._peer = peer_cert
        self._peer_code = signer_code(peer_cert)
        if peer_accepted is None:
            peer_accepted = [peer_cert]
        self._accepted = peer_accepted if callable(peer_accepted) else list(peer_accepted)
        self._keys = [signing_key, *decryption_keys]
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.last_verified: VerifiedManifest | None = None  # signer and token, for the audit log

    @classmethod
    def from_pki(
        cls, directory: Path, *, own: str, peer: str, clock: Callable[[], dt.datetime] | None = None,
        encrypt: bool = True,
    ) -> "DropSeal":
        """Build from a PKI directory: ``own`` and ``peer`` are ``"hub"`` or party codes.

        Rotation overlaps are honoured: the peer's previous signing certificates are accepted
        until their overlap ends (checked at each verification, from the PKI's rotation
        record), and our previous keys, still in overlap when this seal is built, decrypt.
        """
        layout = PkiLayout(Path(directory))
        mine = layout.party(own)
        now = clock() if clock else None
        return cls(
            load_certificate(mine.signing_cert),
            load_private_key(mine.signing_key),
            load_certificates(layout.ca_cert),
            load_certificate(layout.party(peer).signing_cert),
            peer_accepted=lambda at: accepted_certificates(layout.root, f"{peer}/signing", at),
            decryption_keys=accepted_keys(layout.root, f"{own}/signing", now)[1:],
            clock=clock,
            encrypt=encrypt,
        )

    @classmethod
    def from_files(
        cls, *, signing_cert: Path, signing_key: Path, trusted_ca: Path, peer_cert: Path,
        clock: Callable[[], dt.datetime] | None = None, encrypt: bool = True, decryption_keys: Sequence[Path] = (),
    ) -> "DropSeal":
        """Build from files, e.g. an agency data file's ``[tls]`` references resolved to paths.

        ``peer_cert`` may be a bundle (current first, then certificates still accepted). When it
        sits in a PKI party directory, that party's rotation record decides, as for ``from_pki``:
        previous certificates are accepted only until their overlap ends (checked at each
        verification), however old the bundle (certs.rotation.accepted_in_file).
        ``decryption_keys``: our previous keys still in their rotation overlap, which peers may
        still encrypt to (certs.lifecycle.previous_key_files).
        """
        peers = accepted_in_file(peer_cert)

        def accepted(at: dt.datetime) -> list[x509.Certificate]:
            return [cert for cert, until in peers if until is None or at < until]

        return cls(
            load_certificate(signing_cert), load_private_key(signing_key), load_certificates(trusted_ca),
            peers[0][0], peer_accepted=accepted, clock=clock, encrypt=encrypt,
            decryption_keys=[load_private_key(path) for path in decryption_keys],
        )

    # --- adapters.drop_manifest.Seal ---------------------------------------------------

    def seal_file(self, name: str, data: bytes) -> tuple[str, bytes]:
        """Encrypt a data file to the peer: stored as ``<name>.jwe`` (sign-only: as it is)."""
        if not self.encrypts:
            return name, data
        return name + JWE_SUFFIX, encrypt_file(data, self._peer)

    def unseal_file(self, name: str, data: bytes) -> bytes:
        """Decrypt a stored ``.jwe`` file; a file of the other kind is refused, not passed through.

        Sign-only, a plain file is returned as it is and a ``.jwe`` one refused: the two sides
        disagree on the agency's ``seal`` setting.
        """
        if not self.encrypts:
            if name.endswith(JWE_SUFFIX):
                raise _refuse(Reason.MALFORMED, f"{name}: an encrypted file in a sign-only drop")
            return data
        if not name.endswith(JWE_SUFFIX):
            raise _refuse(Reason.MALFORMED, f"{name}: expected an encrypted {JWE_SUFFIX} file")
        return decrypt_file(data, self._keys)

    def sign_manifest(self, manifest: bytes) -> dict[str, bytes]:
        """The ``manifest.jws`` sidecar: an ES256 JWS over the manifest's exact bytes."""
        token = seal_manifest(manifest, signing_cert=self._cert, signing_key=self._key)
        return {JWS_SIDECAR: token.encode("ascii")}

    def verify_manifest(self, manifest: bytes, sidecars: Mapping[str, bytes]) -> None:
        """Refuse unless ``manifest.jws`` is there, verifies, comes from the peer and signs ``manifest``."""
        token = sidecars.get(JWS_SIDECAR)
        if token is None:
            raise _refuse(Reason.UNKNOWN_SIGNER, f"batch is not signed: {JWS_SIDECAR} is missing")
        now = self._clock()
        accepted = self._accepted(now) if callable(self._accepted) else self._accepted
        verified = open_manifest(
            token, trusted_ca=self._cas, expected_signer=self._peer_code, accepted=accepted, now=now
        )
        if not hmac.compare_digest(verified.payload, bytes(manifest)):
            raise _refuse(Reason.BAD_SIGNATURE, f"{JWS_SIDECAR} signs a different manifest than {_MANIFEST}")
        if not self.encrypts:  # said here, before its files are read as plain ones and fail to parse
            files = verified.manifest.get("files")
            for entry in files if isinstance(files, list) else []:
                name = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(name, str) and name.endswith(JWE_SUFFIX):
                    raise _refuse(Reason.MALFORMED, f"{name}: an encrypted file in a sign-only drop "
                                                    "(the peer encrypts: seal = \"sign+encrypt\")")  # fmt: skip
        self.last_verified = verified


    def sign_receipt(self, receipt: bytes) -> bytes | None:
        """The receipt's signature sidecar: an ES256 JWS over its exact bytes, typed as a receipt."""
        return seal_manifest(receipt, signing_cert=self._cert, signing_key=self._key,
                             content_type=RECEIPT_TYPE).encode("ascii")  # fmt: skip

    def verify_receipt(self, receipt: bytes, signature: bytes | None) -> bytes:
        """Refuse unless ``signature`` is there, verifies, comes from the peer and signs ``receipt``;
        return it, the agency's word to keep."""
        if signature is None:
            raise _refuse(Reason.UNKNOWN_SIGNER, "the receipt is not signed: its .jws is missing")
        now = self._clock()
        accepted = self._accepted(now) if callable(self._accepted) else self._accepted
        verified = open_manifest(signature, trusted_ca=self._cas, expected_signer=self._peer_code, accepted=accepted,
                                 now=now, content_type=RECEIPT_TYPE)  # fmt: skip
        if not hmac.compare_digest(verified.payload, bytes(receipt)):
            raise _refuse(Reason.BAD_SIGNATURE, "the .jws signs a different receipt than the one found")
        return signature


_MANIFEST = "manifest.json"
