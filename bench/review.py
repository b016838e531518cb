"""Scenario 4: reviewer queries (history and check) for random companies, in-process and over HTTP, vs bare SQL.

The dataset (bench.synthetic.ReviewDataset: companies, licences and violations 1 : 2 : 5) is
bulk-loaded into the migrated schema (bench.bulkload), since building it through intake
would take longer than the queries being measured.

Sides, each over the same random companies:

- bare SQL: the three indexed SELECTs a history needs (company by USCC, its licences, its
  violations), fetched as rows — the baseline;
- in-process: hub.history.find_company + company_history, and hub.compliance.run_check
  (which also stores the check and audits it), in a process set up as `hub serve` is: on
  SQLite a hub.db.WalCheckpointer keeps the write-ahead log short, so that the check's commits
  do not checkpoint it themselves;
- in-process, a reference: find_company + reviewed_history, the API history endpoint's own
  work (the reads, then its audit entry, chained and committed) without HTTP. Between it and
  the history row above lies the audit entry; between it and the history over HTTP, HTTP and
  FastAPI;
- over HTTP: the real API (`hub serve`: hub.api.create_app under uvicorn, its own process,
  127.0.0.1) with a reviewer token from the token file, GET /api/v1/companies/{uscc}/history
  and /check?case=… on one keep-alive connection. The history route also appends the
  lookup to the audit log and commits, as every reviewer lookup does.

The HTTP client is the standard library's http.client, not requests: on the 2-core benchmark
machine a requests.Session spent ~2.5 ms of its own per call (it scans the process environment
for proxy settings twice per request, merges hooks, cookies and adapters), about as much as
the server's whole /healthz, so the HTTP rows measured the client as much as the hub.

Every key is queried once, untimed, by the bare SQL first (all sides then meet warm caches
alike); then the sides take turns key by key, so a burst of load on the shared machine hits
them all rather than one.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa

from bench.bulkload import load_review_dataset
from bench.measure import Measurement, percentile
from bench.synthetic import ReviewDataset

__all__ = ["HTTP_BOUND_MS", "IN_PROCESS_BOUND_MS", "ReviewRun", "http_getter", "measure_review", "serve_api"]

REPO = Path(__file__).resolve().parent.parent
IN_PROCESS_BOUND_MS, HTTP_BOUND_MS = 10.0, 20.0  # the p99 bounds


@dataclass
class ReviewRun:
    """One database's measurements: the baseline, the hub's sides, the HTTP floor and the load time."""

    bare: Measurement
    sides: list[Measurement]  # extra["via"] is "in-process" or "http", extra["bound_ms"] its p99 bound
    http_floor: Measurement  # GET /healthz on the same session: what HTTP alone costs
    audited: Measurement  # the history endpoint's work in-process: the reads and the audit entry
    load_seconds: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_api(url: str, work: Path, *, timeout: float = 60.0) -> Iterator[tuple[str, str]]:
    """`hub serve` on a free 127.0.0.1 port against the database at ``url``; yields (base URL, reviewer token).

    The token is made as `hub tokens add NAME --role reviewer` makes one: only its hash goes
    into the token file the server reads (HUB_API_TOKENS_FILE).
    """
    import requests

    from hub.api.auth import Role, add_token

    work.mkdir(parents=True, exist_ok=True)
    tokens = work / "api-tokens.json"
    token = add_token(tokens, name="bench-reviewer", role=Role.REVIEWER)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HUB_DATABASE_URL": url, "HUB_API_TOKENS_FILE": str(tokens),
           "HUB_DATA_DIR": str(work / "var"), "PYTHONPATH": str(REPO)}  # fmt: skip
    log_path = work / "hub-serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"hub serve exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
                try:
                    if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"hub serve not ready in {timeout:.0f} s: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
            yield base, token
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def http_getter(base: str, token: str) -> Callable[..., None]:
    """``get(path, **params)``: one GET on a keep-alive connection to ``base``, the whole body read.

    Raises:
        RuntimeError: the answer was not 200.
    """
    where = urlsplit(base)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}

    def get(path: str, **params: str) -> None:
        target = f"{path}?{urlencode(params)}" if params else path
        for attempt in (1, 2):
            try:
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                body = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()  # the server closed an idle keep-alive connection: reconnect once, as requests does
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:500]!r}")

    return get


def _sides(engine: sa.Engine, base: str, token: str) -> dict[str, Callable[[str], None]]:
    """Each side as a function of one USCC; the first is the baseline."""
    from contracts.registry import load_registry
    from hub.compliance import load_rules, run_check
    from hub.db import session_scope
    from hub.history import company_history, find_company, reviewed_history

    registry, rules = load_registry(), load_rules()
    get = http_getter(base, token)

    def bare(uscc: str) -> None:
        with engine.connect() as conn:
            cid = conn.execute(sa.text("SELECT id FROM companies WHERE uscc = :u"), {"u": uscc}).scalar_one()
            conn.execute(sa.text("SELECT * FROM licences WHERE company_id = :c ORDER BY decision_date, id"),
                         {"c": cid}).all()  # fmt: skip
            conn.execute(sa.text("SELECT * FROM violations WHERE company_id = :c ORDER BY decision_date, id"),
                         {"c": cid}).all()  # fmt: skip

    def history(uscc: str) -> None:
        with session_scope(engine) as session:
            company_history(session, find_company(session, uscc))

    def audited(uscc: str) -> None:
        with session_scope(engine) as session:
            reviewed_history(session, find_company(session, uscc), None, actor="reviewer:bench",
                             detail={"case": "BENCH-1"})  # fmt: skip

    def check(uscc: str) -> None:
        with session_scope(engine) as session:  # committed with its audit entry, as the API and web page check
            run_check(session, company=find_company(session, uscc), case_id="BENCH-1", actor="bench",
                      rules=rules, agencies=registry, freshness_hours=24, commit=True)  # fmt: skip

    return {
        "bare SQL (3 SELECTs)": bare,
        "hub history (in-process)": history,
        "hub check (in-process)": check,
        "hub history + audit entry (in-process)": audited,
        "hub history (HTTP)": lambda uscc: get(f"/api/v1/companies/{uscc}/history", case="BENCH-HTTP-1"),
        "hub check (HTTP)": lambda uscc: get(f"/api/v1/companies/{uscc}/check", case="BENCH-HTTP-1"),
        "GET /healthz (HTTP)": lambda _uscc: get("/healthz"),
    }


def measure_review(url: str, data: ReviewDataset, samples: int, work: Path, *, seed: int = 1) -> ReviewRun:
    """Load ``data`` into the empty database at ``url`` (migrating it first) and time every side on it."""
    from hub.db import WalCheckpointer, create_db_engine, migrate

    engine = create_db_engine(url)
    try:
        migrate(engine)
        load_seconds = load_review_dataset(engine, data)
        rng = random.Random(seed)
        keys = [data.usccs[rng.randrange(data.companies)] for _ in range(samples)]
        # the in-process sides run as the serving process does, which keeps SQLite's log short
        with serve_api(url, work) as (base, token), WalCheckpointer(engine):
            sides = _sides(engine, base, token)
            for key in keys:  # warm every page the keys touch, untimed, for all sides alike
                sides["bare SQL (3 SELECTs)"](key)
            for fn in sides.values():
                for _ in range(3):
                    fn(keys[0])  # compiled statements, pooled connections, the server's first requests
            times: dict[str, list[float]] = {name: [] for name in sides}
            for key in keys:
                for name, fn in sides.items():
                    start = time.perf_counter()
                    fn(key)
                    times[name].append((time.perf_counter() - start) * 1000)
    finally:
        engine.dispose()
    out = {}
    for name, ms in times.items():
        via = "http" if "(HTTP)" in name else "in-process"
        out[name] = Measurement(name, records=len(ms), seconds=sum(ms) / 1000, p50_ms=percentile(ms, 50),
                                p99_ms=percentile(ms, 99),
                                extra={"via": via, "bound_ms": HTTP_BOUND_MS if via == "http" else IN_PROCESS_BOUND_MS})  # fmt: skip
    floor = out.pop("GET /healthz (HTTP)")
    bare = out.pop("bare SQL (3 SELECTs)")
    audited = out.pop("hub history + audit entry (in-process)")
    return ReviewRun(bare=bare, sides=list(out.values()), http_floor=floor, audited=audited, load_seconds=load_seconds)
