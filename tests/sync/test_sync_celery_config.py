"""The Celery app as configured from Settings: reliability settings and a beat entry per agency."""

from __future__ import annotations

from contracts.registry import load_registry
from hub.settings import Settings
from sync_jobs.celery_app import MAX_RETRY_DELAY, TASK_TIME_LIMIT, VISIBILITY_TIMEOUT, create_app


def test_the_embedded_default_needs_no_server_and_the_reliability_settings_hold(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, broker_url=None, database_url=None))
    conf = app.conf
    assert conf.broker_url == f"sqla+sqlite:///{(tmp_path / 'broker.sqlite3').resolve()}"
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost, conf.worker_prefetch_multiplier) == (True, True, 1)
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert "visibility_timeout" not in conf.broker_transport_options  # the SQL transport takes engine options


def test_on_redis_no_retry_delay_reaches_the_visibility_timeout(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/11"))
    assert app.conf.broker_transport_options["visibility_timeout"] == VISIBILITY_TIMEOUT
    assert MAX_RETRY_DELAY + TASK_TIME_LIMIT < VISIBILITY_TIMEOUT
    import sync_jobs.tasks as tasks

    assert tasks.HubTask.retry_max_delay <= MAX_RETRY_DELAY


def test_the_beat_runs_each_agency_at_its_own_interval(tmp_path):
    registry = load_registry(overrides={"GSJ": {"schedule_seconds": 900}})
    app = create_app(Settings(data_dir=tmp_path, lease_seconds=60), registry=registry.values())
    schedule = app.conf.beat_schedule
    assert {name for name in schedule if name.startswith("sync-")} == {f"sync-{code}" for code in registry}
    assert schedule["sync-GSJ"]["schedule"].total_seconds() == 900
    assert schedule["sync-SCJG"]["schedule"].total_seconds() == registry["SCJG"].schedule_seconds
    assert schedule["sync-GSJ"]["args"] == ("GSJ",)  # tasks take ids only
    assert schedule["sweep"]["schedule"].total_seconds() == 60
