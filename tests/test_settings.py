"""HUB_* settings: a value that does not parse is one clear error, and HUB_LOG_LEVEL takes effect."""

from __future__ import annotations

import os

import pytest

from hub.errors import ConfigurationError
from hub.settings import Settings
from tests.helpers import run_hub


def test_a_bad_value_names_the_variable_the_value_and_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HUB_FRESHNESS_HOURS", "-1")
    monkeypatch.setenv("HUB_LOG_LEVEL", "loud")
    with pytest.raises(ConfigurationError) as caught:
        Settings()
    message = str(caught.value)
    assert "HUB_FRESHNESS_HOURS='-1': Input should be greater than 0" in message
    assert "HUB_LOG_LEVEL='loud': must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG" in message


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("HUB_LEASE_SECONDS", "inf", "Input should be a finite number"),
    ("HUB_LEASE_SECONDS", "1e12", "Input should be less than or equal to 86400"),
    ("HUB_FRESHNESS_HOURS", "inf", "Input should be a finite number"),
    ("HUB_DATABASE_URL", "hub.sqlite3", "not a database URL"),
    ("HUB_BROKER_URL", "rabbit://broker.internal", "the broker must be Redis or RabbitMQ"),
])  # fmt: skip
def test_a_value_that_parses_but_cannot_work_is_refused_with_the_settings(monkeypatch, tmp_path, name, value, reason):
    """Each used to pass here and fail later as a traceback: a lease no clock can add, kombu's KeyError."""
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=f"{name}='{value}': {reason}"):
        Settings()


@pytest.mark.parametrize(("name", "value"), [("HUB_BROKER_URL", "redis+socket:///run/redis.sock"),
                                             ("HUB_BROKER_URL", "sentinel://10.0.0.5:26379"),
                                             ("HUB_BROKER_URL", "AMQP://guest@rabbit//"),
                                             ("HUB_DATABASE_URL", "postgresql+psycopg://hub@db/hub")])
def test_urls_of_the_brokers_and_databases_we_run_on_are_taken(monkeypatch, tmp_path, name, value):
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(name, value)
    assert getattr(Settings(), name.removeprefix("HUB_").lower()) == value


@pytest.mark.parametrize("name", ["HUB_BROKER_URL", "HUB_DATABASE_URL"])
def test_a_blank_url_means_the_embedded_default_as_before(monkeypatch, tmp_path, name):
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(name, "  ")
    settings = Settings()
    assert settings.resolved_broker_url.startswith("sqla+sqlite:///")
    assert settings.resolved_database_url.startswith("sqlite:///")


def test_a_database_the_hub_cannot_reach_or_a_newer_hub_upgraded_is_one_line(tmp_path):
    import sqlite3

    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path)}
    env.pop("HUB_DATABASE_URL", None)
    unreachable = {**env, "HUB_DATABASE_URL": "postgresql://hub@127.0.0.1:9/hub"}  # port 9: nobody listens
    proc = run_hub("init", env=unreachable)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: cannot create or upgrade the hub database postgresql+psycopg://hub@127.0.0.1:9/hub" in proc.stderr
    assert run_hub("init", env=env).returncode == 0
    with sqlite3.connect(tmp_path / "hub.sqlite3") as db:  # as a newer hub leaves it in a rolling upgrade
        db.execute("UPDATE alembic_version SET version_num = '0999'")
    for command in (["init"], ["status"]):
        proc = run_hub(*command, env=env)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "is at schema revision 0999, which this hub does not know: a newer hub has upgraded it" in proc.stderr


def test_log_level_is_read_in_any_case(monkeypatch, tmp_path):
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HUB_LOG_LEVEL", " warning ")
    assert Settings().log_level == "WARNING"


COMMANDS = [["status"], ["tokens", "add", "someone", "--role", "reviewer"], ["audit", "verify"]]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_stops_on_a_bad_setting_with_one_line_and_no_traceback(tmp_path, command):
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path), "HUB_LEASE_SECONDS": "two minutes",
           "HUB_API_TOKENS_FILE": str(tmp_path / "tokens.json")}  # fmt: skip
    proc = run_hub(*command, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: invalid setting: HUB_LEASE_SECONDS='two minutes': Input should be a valid number, "
        "unable to parse string as a number (ConfigurationError)"
    ]
    assert not (tmp_path / "tokens.json").exists()  # nothing was done before the setting was read


def test_the_database_password_is_never_printed(pg_url, tmp_path):
    from sqlalchemy.engine import make_url

    with_password = make_url(pg_url).set(password="S3cret-Pw").render_as_string(hide_password=False)
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path), "HUB_DATABASE_URL": with_password}
    ready = run_hub("init", env=env)
    assert ready.returncode == 0, ready.stderr
    assert "database ready: postgresql" in ready.stdout and "***" in ready.stdout
    assert "S3cret-Pw" not in ready.stdout + ready.stderr


@pytest.mark.parametrize("command", [["status"], ["history", "91120104631706691X"], ["dead-letters", "list"],
                                     ["check", "91120104631706691X", "--case", "C-1"], ["audit", "verify"]])  # fmt: skip
def test_a_command_that_reads_never_creates_a_database_where_none_was_initialised(tmp_path, command):
    elsewhere = tmp_path / "not-the-hub"  # e.g. a cron job started from another working directory
    env = {**os.environ, "HUB_DATA_DIR": str(elsewhere)}
    env.pop("HUB_DATABASE_URL", None)
    proc = run_hub(*command, env=env)
    assert proc.returncode == 1
    assert "no hub database at sqlite:///" in proc.stderr and "run `hub init`" in proc.stderr
    assert not (elsewhere / "hub.sqlite3").exists()


@pytest.mark.parametrize(("options", "words"), [(["--no-beat"], "needs a shared HUB_BROKER_URL"),
                                                (["--loglevel", "TRACE"], "--loglevel 'TRACE': must be one of")])
def test_a_worker_refuses_what_cannot_work_in_one_line(tmp_path, options, words):
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path)}
    env.pop("HUB_BROKER_URL", None)
    proc = run_hub("worker", *options, env=env)
    assert proc.returncode == 1 and words in proc.stderr and "Traceback" not in proc.stderr


def test_an_agency_credential_in_dot_env_is_found_like_the_settings_beside_it(tmp_path, monkeypatch):
    from hub.runtime import HubRuntime

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HUB_SCJG_TOKEN", raising=False)
    (tmp_path / ".env").write_text(f"HUB_DATA_DIR={tmp_path / 'from-dotenv'}\nHUB_SCJG_TOKEN=token-in-dotenv\n", "utf-8")
    runtime = HubRuntime(Settings())
    assert runtime.settings.data_dir == tmp_path / "from-dotenv"
    adapter = runtime.adapter_for("SCJG")
    try:
        assert adapter.config.token == "token-in-dotenv"
    finally:
        adapter.close()
