"""Scenario 2: ingest of one GBK CSV penalty drop (XFZD's dialect, with its signed manifest) vs a raw bulk load.

The drop is written the way 消防支队 writes it (sandbox.filedrop_dialects: Chinese headers,
GBK, 元, 2026年03月01日 dates, manifest with SHA-256 last, signed with ES256 by the agency's
certificate from a throw-away dev PKI: ``seal = "sign"``) on a directory share; the hub checks
the signature against our CA, streams the file against the signed digests, and loads it
through the real file-drop adapter and hub.sync.pull_agency. The baseline loads the same rows,
already parsed into tuples, with sqlite3 executemany or PostgreSQL COPY.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import tomllib
from pathlib import Path

import psycopg
import sqlalchemy as sa

from bench.measure import Measurement, peak_rss_mb, timed
from bench.synthetic import LazyPenalties
from contracts.registry import AGENCIES_DIR, load_registry
from sandbox.core import AgencyBook
from sandbox.filedrop_agencies import DIALECTS, LAYOUT, FileDropAgency

__all__ = ["hub_checked_read", "hub_ingest", "hub_stored_drop", "raw_load", "write_drop"]


def make_pki(directory: Path):
    """A dev PKI with the hub and XFZD (certificates issued now, keys 0600), as `hub certs init` makes."""
    from certs.pki import init_pki

    return init_pki(directory, parties=[("XFZD", DIALECTS["XFZD"].name)])


def write_drop(root: Path, count: int, pki=None) -> Path:
    """One signed XFZD penalty batch of ``count`` rows under ``root``; returns the CSV file's path.

    Without ``pki``, the one beside ``root`` (``drop-pki``) is made or reused, as hub_ingest finds it.
    """
    from certs.sealer import DropSeal

    pki = pki or make_pki(root.parent / "drop-pki")
    d = DIALECTS["XFZD"]
    for name in LAYOUT:
        (root / name).mkdir(parents=True, exist_ok=True)
    seal = DropSeal.from_pki(pki.root, own="XFZD", peer="hub", encrypt=False)
    agency = FileDropAgency(d, root, AgencyBook(code="XFZD", name=d.name, uscc=d.uscc), seal=seal)
    drafts = LazyPenalties("XFZD", count, abbreviation="消")
    # streamed: a million rendered rows held at once would be the benchmark's own memory peak
    batch_id = agency.write_rows(d.render_penalty(drafts[i], {}) for i in range(count))
    return next((root / "from_agency" / batch_id).glob("*.csv"))


def _spec(root: Path):
    table = tomllib.loads((AGENCIES_DIR / "xfzd.toml").read_text(encoding="utf-8"))["filedrop"]
    table["incomplete_grace"] = 0
    table["seal"] = "sign"
    return load_registry(overrides={"XFZD": {"endpoint": root.resolve().as_uri(), "transport": table}})["XFZD"]


def _tls(pki):
    from adapters import TlsFiles

    return TlsFiles(ca=pki.ca_cert, agency_cert=pki.party("XFZD").signing_cert,
                    hub_signing_cert=pki.hub.signing_cert, hub_signing_key=pki.hub.signing_key)  # fmt: skip


def hub_checked_read(root: Path, work: Path, pki) -> Measurement:
    """bench.pull.checked_read over the drop: claim, verify, decode GBK, parse, map and validate; no database."""
    from adapters import AdapterContext, build_adapter
    from bench.pull import checked_read

    spec = _spec(root)
    (work / "xfzd-read").mkdir(exist_ok=True)
    adapter = build_adapter(spec, AdapterContext(work_dir=work / "xfzd-read", tls=_tls(pki)))
    return checked_read(spec, adapter, "hub read + verify + parse + map + validate, no database")


def hub_stored_drop(url: str, root: Path, work: Path, pki) -> Measurement:
    """bench.pull.stored_only over the drop: the ingest's commits alone; claim, verify, parse and checks untimed."""
    from adapters import AdapterContext, build_adapter
    from bench.pull import stored_only

    spec = _spec(root)
    (work / "xfzd-store").mkdir(exist_ok=True)
    adapter = build_adapter(spec, AdapterContext(work_dir=work / "xfzd-store", tls=_tls(pki)))
    return stored_only(url, spec, adapter, "hub store of checked records, read and checks untimed")


def hub_ingest(url: str, root: Path, work: Path, pki=None) -> Measurement:
    """Claim, verify the signed manifest and the file against it, decode GBK, map, validate, dedupe and store."""
    from adapters import AdapterContext, build_adapter
    from certs.pki import PkiLayout

    pki = pki or PkiLayout(root.parent / "drop-pki")
    from hub.db import create_db_engine, migrate, session_scope
    from hub.licences import ensure_agencies
    from hub.sync import pull_agency

    engine = create_db_engine(url)
    migrate(engine)
    spec = _spec(root)
    with session_scope(engine) as session:
        ensure_agencies(session, [spec])
    (work / "xfzd").mkdir(exist_ok=True)
    adapter = build_adapter(spec, AdapterContext(work_dir=work / "xfzd", tls=_tls(pki)))
    with timed() as t:
        result = pull_agency(engine, spec, adapter)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM violations")).scalar_one()
    engine.dispose()
    return Measurement("hub file-drop ingest", records=stored, seconds=t.seconds, peak_mb=peak_rss_mb(),
                       extra={"created": result.created, "quarantined": result.quarantined})  # fmt: skip


def raw_load(url: str, csv_file: Path) -> Measurement:
    """The same rows, pre-parsed outside the timing, bulk loaded into one plain table."""
    reader = csv.reader(io.StringIO(csv_file.read_bytes().decode("gbk"), newline=""))
    header = next(reader)
    rows = [tuple(r) for r in reader]
    cols = ", ".join(f'"{h}" TEXT' for h in header)
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"CREATE TABLE raw_penalties ({cols})")
        with timed() as t:
            conn.executemany(f"INSERT INTO raw_penalties VALUES ({', '.join('?' * len(header))})", rows)
            conn.commit()
        conn.close()
        how = "sqlite3 executemany of pre-parsed tuples"
    else:
        dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as conn:
            conn.execute(f"CREATE TABLE raw_penalties ({cols})")
            conn.commit()
            with timed() as t:
                with conn.cursor().copy("COPY raw_penalties FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                conn.commit()
        how = "PostgreSQL COPY of pre-parsed tuples"
    return Measurement("raw bulk load", records=len(rows), seconds=t.seconds, note=how)
