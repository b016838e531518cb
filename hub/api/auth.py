"""Who is calling, and what they may do. Everything is denied unless a rule below allows it.

Reviewers, auditors, admins and the approval system (``intake``) authenticate with a bearer
token; regulators with a token bound to one agency, or with a client certificate whose CN is
their agency code (when the API runs with TLS client certificates; see hub.api.tls).

Tokens live in a JSON file (Settings.api_tokens_file) as SHA-256 hashes only::

    {"tokens": [
      {"name": "wang.li", "role": "reviewer", "sha256": "<hex>"},
      {"name": "scjg-feed", "role": "regulator", "agency": "SCJG", "sha256": "<hex>"}
    ]}

``hub tokens add`` creates a token, prints it once and stores its hash. A token is never
logged; a caller is named in logs and the audit trail by the token's ``name``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.validation import describe_errors
from hub.errors import ConfigurationError

log = logging.getLogger(__name__)

__all__ = [
    "PERMISSIONS",
    "Permission",
    "Principal",
    "Role",
    "TokenEntry",
    "TokenStore",
    "add_token",
    "hash_token",
    "revoke_token",
]


class Role(StrEnum):
    REVIEWER = "reviewer"  # reads histories and runs pre-approval checks
    AUDITOR = "auditor"  # what a reviewer can, plus repaired and expired records
    ADMIN = "admin"  # everything a reviewer can, plus records licences and reads any feed
    INTAKE = "intake"  # the approval system: records licence grants
    REGULATOR = "regulator"  # one agency: its own licence feed, its own violation reports


class Permission(StrEnum):
    READ_COMPANIES = "companies:read"
    READ_HIDDEN = "companies:read-hidden"
    WRITE_LICENCES = "licences:write"
    WRITE_VIOLATIONS = "violations:write"
    READ_FEED = "feed:read"
    READ_ANY_FEED = "feed:read-any"
    READ_STATUS = "status:read"


#: The whole policy. A permission not listed for a role is denied.
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.REVIEWER: frozenset({Permission.READ_COMPANIES, Permission.READ_STATUS}),
    Role.AUDITOR: frozenset({Permission.READ_COMPANIES, Permission.READ_HIDDEN, Permission.READ_STATUS}),
    Role.ADMIN: frozenset({Permission.READ_COMPANIES, Permission.READ_STATUS, Permission.WRITE_LICENCES,
                           Permission.READ_FEED, Permission.READ_ANY_FEED}),  # fmt: skip
    Role.INTAKE: frozenset({Permission.WRITE_LICENCES}),
    Role.REGULATOR: frozenset({Permission.WRITE_VIOLATIONS, Permission.READ_FEED}),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: Role
    agency: str | None = None  # set for regulators: the only agency they act as
    via: Literal["token", "certificate"] = "token"

    def can(self, permission: Permission) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    @property
    def actor(self) -> str:
        """How the caller is named in the audit log."""
        return f"{self.role.value}:{self.name}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    role: Role
    agency: str | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _agency_for_regulators(self) -> "TokenEntry":
        if (self.role == Role.REGULATOR) != (self.agency is not None):
            raise ValueError("a regulator token needs an agency, and only a regulator token may have one")
        return self


class _TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry] = Field(default_factory=list)


class TokenStore:
    """The known tokens, by hash. An empty store (no file configured) lets nobody in.

    Loaded from a file, it follows the file: a token added, replaced or revoked there (``hub
    tokens``) counts from the next request, without restarting ``hub serve``. A file that can
    no longer be read lets nobody in until it can (logged), rather than keep tokens it may revoke.
    """

    def __init__(self, entries: list[TokenEntry] | None = None, *, path: Path | None = None) -> None:
        self._by_hash = {e.sha256: e for e in entries or []}
        self._path, self._seen = path, _file_state(path)

    @classmethod
    def load(cls, path: Path | None) -> "TokenStore":
        """Read the token file; a missing setting means no tokens (deny everyone)."""
        return cls(_read_entries(path), path=path)

    def principal(self, token: str) -> Principal | None:
        self._follow_the_file()
        entry = self._by_hash.get(hash_token(token))
        if entry is None:
            return None
        return Principal(name=entry.name, role=entry.role, agency=entry.agency)

    def _follow_the_file(self) -> None:
        if self._path is None or (state := _file_state(self._path)) == self._seen:
            return
        try:
            entries = _read_entries(self._path)
        except ConfigurationError as exc:
            log.error("%s: letting nobody in until the file can be read again", exc)
            entries = []
        self._by_hash, self._seen = {e.sha256: e for e in entries}, state

    def __len__(self) -> int:
        return len(self._by_hash)


def _file_state(path: Path | None) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino) if st else None


def _read_entries(path: Path | None) -> list[TokenEntry]:
    if path is None:
        return []
    try:
        parsed = _TokenFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"API token file {path}: cannot read: {exc}") from exc
    except ValidationError as exc:
        raise ConfigurationError(f"API token file {path}: {describe_errors(exc)}") from exc
    return parsed.tokens


def add_token(path: Path, *, name: str, role: Role, agency: str | None = None) -> str:
    """Create a token, store only its hash in ``path`` (replacing one of the same name), return it once."""
    token = secrets.token_urlsafe(32)
    entry = TokenEntry(name=name, role=role, agency=agency, sha256=hash_token(token))
    _write_entries(path, [*(e for e in _read_entries(path) if e.name != name), entry])
    return token


def revoke_token(path: Path, name: str) -> bool:
    """Remove ``name``'s token from ``path``; False when there was none. A running server follows."""
    current = _read_entries(path)
    kept = [e for e in current if e.name != name]
    if len(kept) != len(current):
        _write_entries(path, kept)
    return len(kept) != len(current)


def _write_entries(path: Path, entries: list[TokenEntry]) -> None:
    body = json.dumps({"tokens": [e.model_dump(exclude_none=True) for e in entries]}, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(body + "\n")
    os.replace(tmp, path)  # mkstemp files are 0600: hashes are not secrets, but need not be public
