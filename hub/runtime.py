"""Wiring: one Settings read once, then an engine, the agency registry and adapters built from them."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from contracts.registry import AgencySpec, load_registry, resolve_secret
from hub.db import create_db_engine, migrate
from hub.errors import ConfigurationError
from hub.settings import Settings

__all__ = ["HubRuntime"]


class HubRuntime:
    """Everything a command, worker or web process needs, built from one Settings object.

    Args:
        settings: the configuration.
        overrides: per-agency replacements for data-file fields (e.g. sandbox endpoints).
    """

    def __init__(self, settings: Settings, *, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.settings = settings
        self._overrides = dict(overrides or {})

    @cached_property
    def engine(self) -> Engine:
        return create_db_engine(self.settings.resolved_database_url)

    @cached_property
    def registry(self) -> dict[str, AgencySpec]:
        return load_registry(self.settings.agencies_dir, overrides=self._overrides)

    def agency(self, code: str) -> AgencySpec:
        try:
            return self.registry[code.upper()]
        except KeyError as exc:
            known = ", ".join(self.registry)
            raise ConfigurationError(f"no agency {code!r}; known agencies: {known}") from exc

    def init_database(self) -> None:
        """Create or upgrade the schema, then mirror the registry into it."""
        from hub.db import session_scope
        from hub.licences import ensure_agencies

        migrate(self.engine)
        with session_scope(self.engine) as session:
            ensure_agencies(session, self.registry.values())

    def require_database(self) -> None:
        """For commands that read or fix what is there: never create or upgrade a database
        implicitly. Run from another directory, a command would otherwise get a new, empty one
        (var/ is relative to the working directory) and report on that."""
        import sqlalchemy as sa

        from hub.db import is_current, unknown_revisions

        shown, url = self.settings.database_shown, sa.engine.make_url(self.settings.resolved_database_url)
        where = "HUB_DATA_DIR and HUB_DATABASE_URL choose which"
        if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:") \
                and not Path(url.database).exists():  # fmt: skip
            raise ConfigurationError(f"no hub database at {shown}: run `hub init` ({where})")
        try:
            current = is_current(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigurationError(f"cannot read the hub database {shown}: {str(exc).splitlines()[0]}") from exc
        if not current:
            if newer := unknown_revisions(self.engine):
                raise ConfigurationError(f"the hub database {shown} is at schema revision {', '.join(sorted(newer))}, "
                                         "which this hub does not know: a newer hub has upgraded it; run that version")  # fmt: skip
            raise ConfigurationError(f"the hub database {shown} is not at this hub's schema: "
                                     f"run `hub init` to create or upgrade it ({where})")  # fmt: skip

    def adapter_for(self, code: str):
        """Build the adapter for one agency (imports its protocol module lazily)."""
        from adapters import AdapterContext, TlsFiles, build_adapter

        spec = self.agency(code)
        tls = TlsFiles()
        if spec.tls:
            pki = self.settings.resolved_pki_dir

            def path(ref: str | None) -> Path | None:
                return None if ref is None else (Path(ref) if Path(ref).is_absolute() else pki / ref)

            # The hub signs (WS-Security, drop manifests) with its own signing pair from the PKI.
            tls = TlsFiles(ca=path(spec.tls.ca), client_cert=path(spec.tls.client_cert),
                           client_key=path(spec.tls.client_key), agency_cert=path(spec.tls.agency_cert),
                           hub_signing_cert=pki / "hub" / "signing.pem",
                           hub_signing_key=pki / "hub" / "signing.key",
                           hub_previous_signing_keys=_previous_signing_keys(pki))  # fmt: skip
        work_dir = self.settings.data_dir / "agencies" / spec.code
        work_dir.mkdir(parents=True, exist_ok=True)
        secret = resolve_secret(spec.credentials, self.settings.credentials_environment())
        context = AdapterContext(work_dir=work_dir, secret=secret, tls=tls)
        return build_adapter(spec, context)

    def dispose(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def _previous_signing_keys(pki: Path) -> tuple[Path, ...]:
    """The hub's signing keys rotated out but still in their overlap (none: a PKI never rotated)."""
    from certs.lifecycle import previous_key_files

    try:
        return tuple(previous_key_files(pki, "hub/signing"))
    except (OSError, ValueError, ConfigurationError):  # no PKI here: production files named by absolute paths
        return ()
