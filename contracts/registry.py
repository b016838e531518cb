"""The agency registry: one TOML data file per agency in contracts/agencies/.

Adding an agency that speaks a supported protocol is a new data file, not new Python.
Each file names the agency, its protocol and endpoint, where its credentials live, how
often to sync, which licences it must receive, and how its native fields map to ours.
The protocol table (``[rest]``, ``[soap]``, ``[filedrop]``) is validated by that
protocol adapter's own config model when the adapter is built.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.validation import describe_errors
from contracts.mapping import FieldMapping
from hub.errors import ConfigurationError

AGENCIES_DIR = Path(__file__).parent / "agencies"

__all__ = ["AGENCIES_DIR", "AgencySpec", "Receives", "TlsRefs", "load_registry", "resolve_secret"]


class Receives(BaseModel):
    """Which licence grants are routed to this agency (any rule that matches routes it)."""

    model_config = ConfigDict(extra="forbid")

    all: bool = False
    licence_categories: list[str] = Field(default_factory=list)  # XK_XKLB values
    approval_items: list[str] = Field(default_factory=list)  # approval item codes, '*' suffix = prefix
    industries: list[str] = Field(default_factory=list)


class TlsRefs(BaseModel):
    """Files (paths, or names under the PKI directory) for mutual TLS with this agency."""

    model_config = ConfigDict(extra="forbid")

    ca: str | None = None  # the agency's CA, to verify it
    client_cert: str | None = None  # ours, presented to it
    client_key: str | None = None
    agency_cert: str | None = None  # the agency's signing certificate (WS-Security, drop signatures)


class AgencySpec(BaseModel):
    """One agency or regulator, as declared in its data file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,15}$")
    name_zh: str
    name_en: str
    kind: Literal["vertical", "regulator"] = "vertical"
    uscc: str | None = None
    protocol: Literal["rest", "soap", "filedrop"]
    endpoint: str
    credentials: str | None = None  # 'env:NAME' or 'file:PATH'; never the secret itself
    schedule_seconds: int = Field(300, ge=5)
    max_attempts: int = Field(8, ge=1)
    backoff_seconds: float = Field(30.0, gt=0)
    batch_size: int = Field(50, ge=1, le=1000)
    receives: Receives = Field(default_factory=Receives)
    tls: TlsRefs | None = None
    transport: dict[str, Any] = Field(default_factory=dict)  # the [rest]/[soap]/[filedrop] table
    licence_mapping: FieldMapping
    violation_mapping: FieldMapping

    @field_validator("credentials")
    @classmethod
    def _reference_not_secret(cls, value: str | None) -> str | None:
        if value and not value.startswith(("env:", "file:")):
            raise ValueError("must be a reference ('env:NAME' or 'file:PATH'), never the secret itself")
        return value


def _parse(path: Path, overrides: Mapping[str, Any]) -> AgencySpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"agency file {path.name}: cannot read: {exc}") from exc
    protocol = data.get("protocol")
    if protocol in data:
        data["transport"] = data.pop(protocol)
    code = data.get("code", path.stem.upper())
    data.update(overrides.get(code, {}))
    try:
        return AgencySpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"agency file {path.name}: {describe_errors(exc)}") from exc


def load_registry(
    directory: Path | None = None, *, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, AgencySpec]:
    """Load every ``*.toml`` agency file, keyed by agency code, in file-name order.

    Args:
        directory: where the data files are; contracts/agencies/ by default.
        overrides: per-code field replacements (e.g. the sandbox's loopback endpoints).
    """
    directory = directory or AGENCIES_DIR
    specs: dict[str, AgencySpec] = {}
    for path in sorted(Path(directory).glob("*.toml")):
        spec = _parse(path, overrides or {})
        if spec.code in specs:
            raise ConfigurationError(f"agency file {path.name}: code {spec.code} is declared twice")
        specs[spec.code] = spec
    return specs


def resolve_secret(reference: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Read a credentials reference. The value is returned, never logged."""
    if not reference:
        return None
    environ = os.environ if environ is None else environ
    kind, _, target = reference.partition(":")
    if kind == "env":
        if target not in environ:
            raise ConfigurationError(f"credentials {reference}: environment variable is not set")
        return environ[target]
    try:
        return Path(target).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"credentials {reference}: cannot read file") from exc
