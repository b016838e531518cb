"""Protocol adapters: one small module per protocol behind ``adapters.base.AgencyAdapter``.

``build_adapter`` is the only door the hub uses: it picks the module for the agency's
protocol (imported lazily, so the hub never imports requests, zeep or paramiko itself)
and hands it typed config built from the agency's data file.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from adapters.base import AgencyAdapter, Cursor, Health, InboundRecord, OutboundMessage, Page, Receipt, Rejected
from contracts.registry import AgencySpec
from hub.errors import ConfigurationError

__all__ = [
    "AdapterContext",
    "AgencyAdapter",
    "Cursor",
    "Health",
    "InboundRecord",
    "OutboundMessage",
    "Page",
    "Receipt",
    "Rejected",
    "build_adapter",
]

_MODULES = {"rest": "adapters.rest", "soap": "adapters.soap", "filedrop": "adapters.filedrop"}


@dataclass(frozen=True)
class TlsFiles:
    """Resolved file paths for mutual TLS and message signatures with one agency."""

    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    agency_cert: Path | None = None  # the agency's signing certificate
    hub_signing_cert: Path | None = None  # ours, for WS-Security and drop signatures
    hub_signing_key: Path | None = None
    # our previous signing keys still in their rotation overlap: peers may still encrypt to them
    hub_previous_signing_keys: tuple[Path, ...] = ()


@dataclass(frozen=True)
class AdapterContext:
    """What an adapter may need beyond its data file, resolved by the hub before construction."""

    work_dir: Path  # private scratch space (e.g. a file drop's local staging area)
    secret: str | None = None  # the resolved credentials reference (a token, a password)
    tls: TlsFiles = field(default_factory=TlsFiles)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0


def build_adapter(spec: AgencySpec, context: AdapterContext) -> AgencyAdapter:
    """Construct the adapter for ``spec.protocol`` with config validated from the data file."""
    try:
        module = importlib.import_module(_MODULES[spec.protocol])
    except KeyError as exc:  # pragma: no cover - AgencySpec already restricts the protocol
        raise ConfigurationError(f"agency {spec.code}: no adapter for protocol {spec.protocol!r}") from exc
    return module.from_spec(spec, context)
