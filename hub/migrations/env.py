"""Alembic environment: the engine comes from hub.db (or HUB_DATABASE_URL when run as `alembic`)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

import hub.models  # noqa: F401  registers every table on the metadata
from hub.db import create_db_engine
from hub.models import metadata

config = context.config

#: 'SHMG'. Several workers started at once each upgrade the schema on their way up; on PostgreSQL
#: all but one failed creating alembic_version. The lock makes them take turns, and a later one,
#: reading the version after the first has committed, finds nothing left to do.
_MIGRATORS_LOCK = 0x5348_4D47


def _engine():
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    from hub.settings import Settings

    return create_db_engine(Settings().resolved_database_url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already serialises them
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATORS_LOCK)))
            context.run_migrations()


run_migrations_online()
