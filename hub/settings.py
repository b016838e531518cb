"""The one place that reads the environment. Components get typed pieces of it in their constructors."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.errors import ConfigurationError

__all__ = ["BROKER_SCHEMES", "LOG_LEVELS", "Settings"]

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
BROKER_SCHEMES = ("redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp")


class Settings(BaseSettings):
    """Hub configuration, from HUB_* environment variables (and an optional .env file)."""

    model_config = SettingsConfigDict(env_prefix="HUB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("var"), description="embedded database, file drops, PKI, artifacts")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file in data_dir")
    broker_url: str | None = Field(None, description="Celery broker; default: SQLite file in data_dir")
    agencies_dir: Path | None = Field(None, description="agency data files; default: contracts/agencies")
    pki_dir: Path | None = Field(None, description="certificates and keys; default: data_dir/pki")
    # bounded: a value that parses but no clock can add (inf, 1e12 s) failed later, as a traceback
    freshness_hours: float = Field(24.0, gt=0, le=24 * 3660, allow_inf_nan=False,
                                   description="older agency data makes a verdict stale (at most ten years)")
    lease_seconds: float = Field(120.0, gt=0, le=86_400, allow_inf_nan=False,
                                 description="how long a sync lease lives without renewal (at most a day)")
    api_tokens_file: Path | None = Field(None, description="reviewer/admin/regulator tokens (JSON)")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL, for `hub serve` and "
                                               "`hub worker`; from WARNING up the server logs no line per request")

    def __init__(self, **values) -> None:
        # pydantic's report is a traceback through pydantic-settings: an operator needs the
        # variable, the value and the reason, as one error every command already prints
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from exc

    @field_validator("database_url", "broker_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # HUB_DATABASE_URL= in a .env or unit file meant "the embedded default", as it did before these were checked
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str | None) -> str | None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if value is not None:
            try:
                make_url(value)
            except ArgumentError:
                raise ValueError("not a database URL (for example postgresql://hub@db.example/hub)") from None
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_we_run_on(cls, value: str | None) -> str | None:
        # an unknown scheme surfaced only as kombu's KeyError when the worker started
        scheme = (value or "").partition("://")[0].lower()
        known = scheme in BROKER_SCHEMES or scheme.partition("+")[0] in ("redis", "rediss", "sqla")  # redis+socket://
        if value is not None and not known:
            raise ValueError(f"the broker must be Redis or RabbitMQ ({', '.join(BROKER_SCHEMES)}://…), "
                             "or unset for the embedded one")  # fmt: skip
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> str:
        level = str(value).strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hub.sqlite3').resolve()}"

    def credentials_environment(self) -> dict[str, str]:
        """Where ``env:NAME`` credentials references are looked up: the process environment, then
        the same .env file the HUB_* settings are read from (both or neither, not one of them)."""
        return {**self._dotenv, **os.environ}

    @cached_property
    def _dotenv(self) -> dict[str, str]:
        """The .env file, read once, as the settings themselves are."""
        from dotenv import dotenv_values

        env_file = self.model_config.get("env_file")
        from_file = dotenv_values(env_file) if isinstance(env_file, str) and Path(env_file).is_file() else {}
        return {k: v for k, v in from_file.items() if v is not None}

    @property
    def database_shown(self) -> str:
        """The database URL for output and logs: its password is never printed."""
        from sqlalchemy.engine import make_url

        return make_url(self.resolved_database_url).render_as_string(hide_password=True)

    @cached_property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite3').resolve()}"

    @cached_property
    def resolved_pki_dir(self) -> Path:
        return self.pki_dir or self.data_dir / "pki"


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = "HUB_" + "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}={error['input']!r}: {message}" if "input" in error else f"{name}: {message}")
    return "invalid setting" + ("s" if len(problems) > 1 else "") + ": " + "; ".join(problems)
