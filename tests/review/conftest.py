"""Fixtures for the reviewer workspace: a migrated hub, tokens for every role, seeding through hub functions."""

from __future__ import annotations

import pytest

from review_seed import Hub, make_hub
from tests.helpers import make_uscc


@pytest.fixture
def hub(tmp_path) -> Hub:
    h = make_hub(tmp_path)
    yield h
    h.runtime.dispose()


@pytest.fixture
def pg_hub(tmp_path, pg_url) -> Hub:
    """The same hub on PostgreSQL (127.0.0.1:5432; skipped without it unless HUB_REQUIRE_SERVICES=1)."""
    h = make_hub(tmp_path, database_url=pg_url)
    yield h
    h.runtime.dispose()


@pytest.fixture
def uscc() -> str:
    return make_uscc(4242)


@pytest.fixture
def client(hub):
    with hub.client() as c:
        yield c


@pytest.fixture
def serve(hub):
    """Start the real `hub serve` (uvicorn on 127.0.0.1, an ephemeral port); yields a starter returning its URL.

    ``start(*args, env={...})`` adds to the server's environment; ``start.output[url]`` holds the
    lines it has written so far (stdout and stderr: the hub logs a line per request).
    """
    import os
    import re
    import subprocess
    import sys
    import threading
    import time

    from tests.helpers import REPO

    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> str:
        s = hub.runtime.settings
        env = {**os.environ, "HUB_DATA_DIR": str(s.data_dir), "HUB_DATABASE_URL": s.resolved_database_url,
               "HUB_API_TOKENS_FILE": str(s.api_tokens_file), "HUB_PKI_DIR": str(s.resolved_pki_dir),
               "HUB_FRESHNESS_HOURS": str(s.freshness_hours), "PYTHONUNBUFFERED": "1", **(env or {})}  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "serve", "--host", "127.0.0.1", "--port", "0", *args],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        procs.append(proc)
        found: list[str] = []
        lines: list[str] = []

        def drain() -> None:  # keep reading so the server never blocks on a full pipe
            for line in proc.stdout:
                lines.append(line)
                match = re.search(r"running on (https?://127\.0\.0\.1:\d+)", line)
                if match and not found:
                    found.append(match.group(1))

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 30
        while not found and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not found:
            raise AssertionError("hub serve did not start:\n" + "".join(lines))
        start.output[found[0]] = lines
        return found[0]

    start.output = {}
    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
