"""Prometheus metrics: request latency (observed by middleware) and the hub's state, read at scrape time.

State gauges come from the database on each scrape, so every process reports the same truth
and nothing needs to be kept in step: deliveries by agency and state, quarantined records,
stored violations and the time of each agency's last successful pull and push.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from hub.models import Agency, ComplianceCheck, Delivery, QuarantinedRecord, Violation

__all__ = ["HubCollector", "build_registry"]


class HubCollector:
    """A custom collector: one short read-only query per family on each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        deliveries = GaugeMetricFamily("hub_deliveries", "Licence deliveries by agency and state",
                                       labels=["agency", "state"])  # fmt: skip
        quarantined = GaugeMetricFamily("hub_quarantined_records", "Records refused by the contract, unreleased",
                                        labels=["agency", "source"])  # fmt: skip
        violations = GaugeMetricFamily("hub_violations", "Stored violation records by source agency",
                                       labels=["agency"])  # fmt: skip
        last_pull = GaugeMetricFamily("hub_agency_last_pull_timestamp_seconds",
                                      "Unix time of the agency's last successful pull", labels=["agency"])  # fmt: skip
        last_push = GaugeMetricFamily("hub_agency_last_push_timestamp_seconds",
                                      "Unix time of the agency's last successful push", labels=["agency"])  # fmt: skip
        checks = GaugeMetricFamily("hub_compliance_checks", "Stored pre-approval checks by verdict",
                                   labels=["verdict"])  # fmt: skip
        with Session(self.engine) as s:
            for agency, state, n in s.exec(
                select(Delivery.agency_code, Delivery.state, func.count()).group_by(Delivery.agency_code, Delivery.state)
            ):
                deliveries.add_metric([agency, state], n)
            for agency, source, n in s.exec(
                select(QuarantinedRecord.agency_code, QuarantinedRecord.source, func.count())
                .where(QuarantinedRecord.released_at.is_(None))
                .group_by(QuarantinedRecord.agency_code, QuarantinedRecord.source)
            ):
                quarantined.add_metric([agency or "", source], n)
            for agency, n in s.exec(select(Violation.source_agency, func.count()).group_by(Violation.source_agency)):
                violations.add_metric([agency], n)
            for a in s.exec(select(Agency)):
                if a.last_pull_at:
                    last_pull.add_metric([a.code], a.last_pull_at.timestamp())
                if a.last_push_at:
                    last_push.add_metric([a.code], a.last_push_at.timestamp())
            for verdict, n in s.exec(select(ComplianceCheck.verdict, func.count()).group_by(ComplianceCheck.verdict)):
                checks.add_metric([verdict], n)
        yield from (deliveries, quarantined, violations, last_pull, last_push, checks)


def build_registry(engine: Engine) -> tuple[CollectorRegistry, Histogram]:
    """A registry per application (tests build many apps in one process) and its latency histogram."""
    registry = CollectorRegistry()
    latency = Histogram("hub_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
                        registry=registry)  # fmt: skip
    registry.register(HubCollector(engine))
    return registry, latency
