"""Distributed mode on RabbitMQ: `hub worker` with HUB_BROKER_URL=amqp://… pushes and pulls.

The README promises Redis *or* RabbitMQ as the broker; the Redis case is in test_sync_worker.
RabbitMQ runs on 127.0.0.1:5672 (guest/guest); without it the test skips, and under
HUB_REQUIRE_SERVICES=1 it fails.
"""

from __future__ import annotations

import socket

import pytest

from tests.conftest import service_missing
from tests.sync.test_sync_worker import sync_one_agency_through_a_worker

pytestmark = pytest.mark.slow

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def amqp_broker() -> str:
    """The local RabbitMQ, with the hub's queue emptied before and after."""
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            pass
    except OSError as exc:
        service_missing("RabbitMQ on 127.0.0.1:5672", exc)
    _purge()
    yield AMQP_URL
    _purge()


def _purge() -> None:
    from kombu import Connection

    from sync_jobs.celery_app import QUEUE

    with Connection(AMQP_URL, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            channel.queue_purge(QUEUE)
        except Exception:  # noqa: BLE001 - the queue does not exist yet: nothing to purge
            pass


def test_worker_on_rabbitmq_pushes_and_pulls(tmp_path, start_agency, amqp_broker):
    worker = sync_one_agency_through_a_worker(tmp_path, start_agency, amqp_broker)
    assert "Connected to amqp://guest:**@127.0.0.1:5672//" in worker.log.read_text(errors="replace")
    assert not (tmp_path / "var" / "broker.sqlite3").exists()  # the embedded broker was not used
