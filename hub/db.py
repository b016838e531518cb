"""Engines, sessions and migrations for the embedded default (SQLite) and PostgreSQL.

SQLite runs in WAL mode with foreign keys on and a busy timeout, so a worker, the beat
and the web server can share one file. Schema changes happen only through Alembic.
"""

from __future__ import annotations

import logging
import select
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapters.base import json_text
from hub.errors import ConfigurationError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: A pooled PostgreSQL connection idle this long is pinged before it is used again: a firewall or
#: NAT between the hub and the database may have forgotten it without telling either side.
IDLE_PING_SECONDS = 30.0
_RETURNED_AT = "hub_returned_at"

__all__ = ["WalCheckpointer", "alembic_config", "create_db_engine", "is_current", "migrate", "session_scope",
           "unknown_revisions"]

log = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across process crashes
    cursor.close()


def _sqlite_begin(conn) -> None:
    # BEGIN IMMEDIATE takes the write lock up front: two writers then queue on busy_timeout
    # instead of one failing mid-transaction with "database is locked".
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _server_has_spoken(dbapi_connection) -> bool:
    """True when an idle connection has something to read (or cannot be looked into).

    On an idle connection the server sends nothing unless it is ending the session: a restart,
    pg_terminate_backend or a crash leaves an error message, the closed socket, or both.
    """
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except Exception:  # no socket to look at (another driver, a closed one): ask the server instead
        return True


def _mark_returned(_dbapi_connection, record) -> None:
    record.info[_RETURNED_AT] = time.monotonic()


def _ping_when_in_doubt(engine: Engine, idle_ping_seconds: float):
    """A checkout hook that sends the ping of pool_pre_ping only when the connection may be dead.

    pool_pre_ping pings at every checkout (an empty statement on psycopg): a round trip more per
    transaction, one of the five a reviewer's history waited on. A connection back in the pool
    a moment ago, on which the server has said nothing since, is alive: the ping goes only to
    one whose socket has something to read, or that sat idle ``idle_ping_seconds``. A failed
    ping makes the pool discard the connection and open another, as pool_pre_ping does.
    """

    def checkout(dbapi_connection, record, _proxy) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        recent = returned_at is not None and time.monotonic() - returned_at < idle_ping_seconds
        if recent and not _server_has_spoken(dbapi_connection):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # whatever the failure, this connection is not to be trusted
            raise sa.exc.DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc

    return checkout


def create_db_engine(url: str, *, echo: bool = False, idle_ping_seconds: float = IDLE_PING_SECONDS) -> Engine:
    """An engine for ``url``; SQLite files get their directory created and their pragmas set.

    A PostgreSQL engine checks a pooled connection before handing it out: by its socket when it
    was in use a moment ago, with a round trip when in doubt (``_ping_when_in_doubt``).
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"database URL is not valid: {exc}") from exc
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # let SQLAlchemy, not pysqlite, decide when a transaction begins
        sa.event.listen(engine, "connect", lambda c, _r: setattr(c, "isolation_level", None))
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.drivername in ("postgresql", "postgres"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    connect_args = {}
    if sa.engine.make_url(url).drivername == "postgresql+psycopg":
        # No server-side prepared statements: with them, a pull's dedupe and company lookups
        # (IN lists) kept a plan chosen while the tables were small, and turned into scans as
        # they grew. A 100,000-record pull into PostgreSQL ran at 451 rec/s and falling, with
        # 0.8-1.2 s per lookup; planned per execution it runs at a steady ~2,700 rec/s.
        connect_args["prepare_threshold"] = None
    # JSON columns written by orjson where it reads back the same (json_text): a push window's
    # receipt entry in the audit log took json.dumps about 6% of the push's own thread
    engine = sa.create_engine(url, echo=echo, connect_args=connect_args, json_serializer=json_text)
    sa.event.listen(engine, "connect", _mark_returned)  # a connection just opened is as good as one just used
    sa.event.listen(engine, "checkin", _mark_returned)
    sa.event.listen(engine, "checkout", _ping_when_in_doubt(engine, idle_ping_seconds))
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose work commits together at the end, or not at all."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``.

    Raises:
        ConfigurationError: the database cannot be reached, or a newer hub has upgraded it.
    """
    shown = engine.url.render_as_string(hide_password=True)
    try:
        unknown = unknown_revisions(engine)
        if unknown:
            raise ConfigurationError(f"the hub database {shown} is at schema revision {', '.join(sorted(unknown))}, "
                                     "which this hub does not know: a newer hub has upgraded it; run that version")  # fmt: skip
        command.upgrade(alembic_config(engine), revision)
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigurationError(f"cannot create or upgrade the hub database {shown}: {str(exc).splitlines()[0]}") from exc


def unknown_revisions(engine: Engine) -> set[str]:
    """The database's schema revisions that this hub's migrations do not have (a newer hub's)."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    known = {rev.revision for rev in script.walk_revisions()}
    return _current_revisions(engine) - known


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration (used by /readyz)."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    return _current_revisions(engine) == set(script.get_heads())


def _current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


class WalCheckpointer:
    """Keep a SQLite database's write-ahead log short from a thread of its own, off the request path.

    SQLite copies the log back into the database (a checkpoint, with its fsyncs) inside whichever
    commit takes the log past 1,000 pages. A reviewer's check writes ~6 pages, so about one check
    in 150 paid for a checkpoint: 10-35 ms against a 0.3 ms commit, and that made the check's p99
    (scenario 4 in-process at 100,000 companies, two runs: 16.5 and 17.0 ms without this, 9.7 and
    11.9 ms with it running in `hub serve`). A long-running process that answers requests
    checkpoints every ``every`` seconds instead, so commits rarely find the log that long.
    PASSIVE: it never waits for readers or writers. Durability is unchanged: WAL with
    synchronous=NORMAL, as before.

    The automatic checkpoint stays on as the fallback, but at ``fallback_pages`` rather than
    1,000 on the engine's connections while this runs: checks back to back write ~1,200 pages
    in one 0.25 s interval, so with the default threshold 1 commit in 100-200 still paid for a
    checkpoint (8-12 ms) and set the p99 (3,000 checks at 100,000 companies: p99 8.2 ms with
    30 such commits; 2.3 ms with 4 at 10,000 pages).

    Args:
        engine: the hub's engine; anything but a SQLite file makes this a no-op.
        every: seconds between checkpoints.
        fallback_pages: the automatic checkpoint's threshold while this runs (SQLite's default
            is 1,000 pages of 4 KiB).
    """

    def __init__(self, engine: Engine, *, every: float = 0.25, fallback_pages: int = 10_000) -> None:
        url = engine.url
        on_file = url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:")
        self.path = url.database if on_file else None
        self.engine, self.every, self.fallback_pages = engine, every, fallback_pages
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        def later_fallback(dbapi_connection, _record) -> None:
            dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={int(self.fallback_pages)}")

        self._later_fallback = later_fallback  # one object, so that stop() can remove the listener

    def start(self) -> "WalCheckpointer":
        if self.path is not None and self._thread is None:
            self._stop.clear()
            sa.event.listen(self.engine, "connect", self._later_fallback)
            self.engine.dispose()  # pooled connections still have the 1,000-page threshold
            self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
            sa.event.remove(self.engine, "connect", self._later_fallback)
            self.engine.dispose()  # back to SQLite's own threshold: nobody checkpoints for them now

    def __enter__(self) -> "WalCheckpointer":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _run(self) -> None:
        # a connection of its own, outside the pool: the engine would wrap the PRAGMA in BEGIN IMMEDIATE
        with closing(sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None)) as db:
            while not self._stop.wait(self.every):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next round tries again; the automatic checkpoint still works
                    log.warning("background WAL checkpoint of %s failed: %s", self.path, exc)
