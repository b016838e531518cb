"""The manifest of a file-drop batch, and the hook that signs and encrypts a batch.

A batch is a directory holding data file(s) and ``manifest.json``, which is written LAST
and so marks the batch complete. The manifest names the batch (id, sequence number,
creation time, record kind, format, encoding) and lists every data file as stored: its
name, size in bytes and SHA-256. A reader trusts nothing it has not checked against it.

File names in a manifest are plain names inside the batch directory: no separators, no
``..``, nothing absolute, nothing hidden. A manifest naming anything else is refused.

Sealing (signatures and encryption) slots in through :class:`Seal`: ``seal_file`` turns a
plaintext data file into what is stored (e.g. ``penalties.csv`` → ``penalties.csv.jwe``);
``sign_manifest`` returns sidecar files (e.g. ``manifest.jws``) written before the
manifest; on the way in, ``verify_manifest`` checks them and ``unseal_file`` decrypts. The
manifest's sizes and hashes are of the stored bytes, so transport damage is found before
any decryption. A seal whose ``encrypts`` is False stores files as they are (its
``seal_file``/``unseal_file`` change nothing), so they are hashed and parsed as streams
(:func:`verify_stream`): :class:`NoSeal` (the default, signs nothing) and a sign-only seal
(signed manifest, plain files). A seal that encrypts gets and returns files whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.drop_formats import DropFormat, check_text_encoding
from contracts.validation import describe_errors
from hub.errors import RefusedInput

__all__ = [
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "ManifestFile",
    "NoSeal",
    "Seal",
    "check_batch_id",
    "check_file_name",
    "file_entry",
    "verify_file",
    "verify_stream",
]

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # read whole: a list of a few files, never more than this
_HASH_BLOCK = 1024 * 1024
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_FILE_NAME = re.compile(r"^[^\W_][\w.\-]{0,199}$")  # \w is Unicode: Chinese file names are fine


def check_batch_id(value: str) -> str:
    """A batch id is also a directory name: letters, digits, ``_ . -`` only."""
    if not _BATCH_ID.match(value) or ".." in value:
        raise ValueError(f"batch id {value!r} is not a safe name (letters, digits, _ . -)")
    return value


def check_file_name(value: str) -> str:
    """A data file's name: one plain path component, never ``..``, absolute, hidden or the manifest."""
    if "/" in value or "\\" in value or "\x00" in value or value.startswith((".", "~")):
        raise ValueError(f"file name {value!r} leaves the batch directory or is hidden")
    if not _FILE_NAME.match(value) or ".." in value or value == MANIFEST_NAME:
        raise ValueError(f"file name {value!r} is not a plain file name")
    return value


class ManifestFile(BaseModel):
    """One stored file of a batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_file_name(value)


class Manifest(BaseModel):
    """The done marker of a batch; written last, read first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    batch_id: str
    sequence: int = Field(ge=0)
    created: dt.datetime
    kind: Literal["licences", "penalties"]
    format: DropFormat
    encoding: str = "utf-8"
    producer: str | None = None  # who wrote it: "HUB" or the agency's code
    record_count: int | None = Field(None, ge=0)
    files: tuple[ManifestFile, ...] = Field(min_length=1)

    @field_validator("batch_id")
    @classmethod
    def _safe_batch_id(cls, value: str) -> str:
        return check_batch_id(value)

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, value: str) -> str:
        # refused here, with the batch moved to failed/: found only when the first file was decoded,
        # an unknown codec stopped every later batch behind this one
        return check_text_encoding(value)

    @field_validator("files")
    @classmethod
    def _unique(cls, files: tuple[ManifestFile, ...]) -> tuple[ManifestFile, ...]:
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            raise ValueError("a file is listed twice")
        return files

    def to_bytes(self) -> bytes:
        data = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> "Manifest":
        """Parse a manifest, refusing anything malformed or hostile (names outside the batch)."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise RefusedInput(f"{where}: invalid manifest: {describe_errors(exc)}") from exc


def file_entry(name: str, data: bytes) -> ManifestFile:
    return ManifestFile(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def verify_file(entry: ManifestFile, data: bytes, *, where: str) -> None:
    """Refuse a stored file whose size or SHA-256 differs from its manifest entry."""
    _compare(entry, len(data), hashlib.sha256(data).hexdigest(), where)


def verify_stream(entry: ManifestFile, stream: BinaryIO, *, where: str) -> None:
    """As :func:`verify_file`, for a file read block by block from ``stream`` (never whole into memory).

    Reads ``stream`` to its end; the caller rewinds it to parse what was verified.
    """
    digest, size = hashlib.sha256(), 0
    while block := stream.read(_HASH_BLOCK):
        digest.update(block)
        size += len(block)
        if size > entry.size:  # longer than announced: no need to hash the rest to refuse it
            raise RefusedInput(f"{where}/{entry.name}: more than the {entry.size} bytes the manifest says")
    _compare(entry, size, digest.hexdigest(), where)


def _compare(entry: ManifestFile, size: int, digest: str, where: str) -> None:
    if size != entry.size:
        raise RefusedInput(f"{where}/{entry.name}: size {size} bytes, manifest says {entry.size}")
    if digest != entry.sha256:
        raise RefusedInput(f"{where}/{entry.name}: SHA-256 {digest} does not match the manifest's {entry.sha256}")


@runtime_checkable
class Seal(Protocol):
    """Signs/encrypts outbound batches and checks/decrypts inbound ones (see the module docstring).

    Implementations raise RefusedInput for a bad signature, unknown signer or undecryptable file.
    """

    sidecars: tuple[str, ...]  # extra file names verify_manifest wants, e.g. ("manifest.jws",)
    encrypts: bool  # False: files are stored as they are, and read as streams rather than whole

    def seal_file(self, name: str, data: bytes) -> tuple[str, bytes]:
        """Plaintext data file → (stored name, stored bytes)."""

    def unseal_file(self, name: str, data: bytes) -> bytes:
        """Stored file (by stored name) → plaintext."""

    def sign_manifest(self, manifest: bytes) -> dict[str, bytes]:
        """Sidecar files (name → bytes) to write before the manifest."""

    def verify_manifest(self, manifest: bytes, sidecars: Mapping[str, bytes]) -> None:
        """Check the manifest against the sidecars that were found (a missing one is absent)."""

    def sign_receipt(self, receipt: bytes) -> bytes | None:
        """The signature to write beside a receipt, before it; None: receipts go unsigned."""

    def verify_receipt(self, receipt: bytes, signature: bytes | None) -> bytes | None:
        """Check a receipt against its signature (None: none was found); return the signature that
        vouches for it, to be kept as evidence, or None when this seal checks none."""


class NoSeal:
    """No signing, no encryption: files are stored as they are."""

    sidecars: tuple[str, ...] = ()
    encrypts = False

    def seal_file(self, name: str, data: bytes) -> tuple[str, bytes]:
        return name, data

    def unseal_file(self, name: str, data: bytes) -> bytes:
        return data

    def sign_manifest(self, manifest: bytes) -> dict[str, bytes]:
        return {}

    def verify_manifest(self, manifest: bytes, sidecars: Mapping[str, bytes]) -> None:
        return None

    def sign_receipt(self, receipt: bytes) -> bytes | None:
        return None

    def verify_receipt(self, receipt: bytes, signature: bytes | None) -> bytes | None:
        return None  # an unsealed agency's stray .jws was checked by nobody: it proves nothing
