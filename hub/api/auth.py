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

__all__ = [
    "PERMISSIONS",
    "Permission",
    "Principal",
    "Role",
    "TokenEntry",
    "TokenStore",
    "add_token",
    "hash_token",
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
    """The known tokens, by hash. An empty store (no file configured) lets nobody in."""

    def __init__(self, entries: list[TokenEntry] | None = None) -> None:
        self._by_hash = {e.sha256: e for e in entries or []}

    @classmethod
    def load(cls, path: Path | None) -> "TokenStore":
        """Read the token file; a missing setting means no tokens (deny everyone)."""
        if path is None:
            return cls()
        try:
            parsed = _TokenFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"API token file {path}: cannot read: {exc}") from exc
        except ValidationError as exc:
            raise ConfigurationError(f"API token file {path}: {describe_errors(exc)}") from exc
        return cls(parsed.tokens)

    def principal(self, token: str) -> Principal | None:
        entry = self._by_hash.get(hash_token(token))
        if entry is None:
            return None
        return Principal(name=entry.name, role=entry.role, agency=entry.agency)

    def __len__(self) -> int:
        return len(self._by_hash)


def add_token(path: Path, *, name: str, role: Role, agency: str | None = None) -> str:
    """Create a token, store only its hash in ``path`` (replacing one of the same name), return it once."""
    token = secrets.token_urlsafe(32)
    entry = TokenEntry(name=name, role=role, agency=agency, sha256=hash_token(token))
    current = []
    if path.exists():
        current = [e for e in TokenStore.load(path)._by_hash.values() if e.name != name]
    body = json.dumps({"tokens": [e.model_dump(exclude_none=True) for e in [*current, entry]]}, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(body + "\n")
    os.replace(tmp, path)  # mkstemp files are 0600: hashes are not secrets, but need not be public
    return token
