"""Seeding for the reviewer tests: a migrated hub with a token per role; data only through hub functions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient

from contracts.records import LicenceGrant, ViolationRecord
from contracts.validation import parse_record
from hub.api import create_app
from hub.api.auth import Role, add_token
from hub.clock import utcnow
from hub.db import session_scope
from hub.licences import record_grants
from hub.models import Agency
from hub.runtime import HubRuntime
from hub.settings import Settings
from hub.violations import store_violation
from tests.helpers import grant

TODAY = dt.date.today()
AUTHORITIES = {  # code -> (name, USCC) of the penalising authority, as in the agency files
    "SCJG": ("天津市南开区市场监督管理局", "11120104MB1A20010F"),
    "GSJ": ("国税局南开分局", "11120104MB1201613X"),
    "XFZD": ("天津市南开区消防救援支队", "11120104MB0212345Y"),
    "GAFJ": ("天津市公安局南开分局", "11120104MB1A20029C"),
}


def violation(uscc: str, agency: str, record_id: str, *, severity: str = "ordinary",
              penalties: tuple[str, ...] = ("罚款",), decided: dt.date | None = None, **extra) -> dict:  # fmt: skip
    """A canonical penalty record keyed by CF_ codes (what a regulator POSTs)."""
    name, code = AUTHORITIES.get(agency, AUTHORITIES["SCJG"])
    decided = decided or TODAY - dt.timedelta(days=30)
    record = {
        "CF_XDR_MC": extra.pop("name", "天津测试公司"), "CF_XDR_LB": "法人及非法人组织", "CF_XDR_SHXYM": uscc,
        "CF_WSH": f"{agency}罚〔{decided.year}〕{record_id}号", "CF_WFXW": "未按规定经营", "CF_SY": "现场检查发现违规行为",
        "CF_YJ": "《行政处罚法》第二十八条", "CF_CFLB": list(penalties), "CF_NR": "处以罚款",
        "CF_NR_FK": "0.2" if "罚款" in penalties else None, "CF_JDRQ": decided.isoformat(),
        "CF_YXQ": (decided + dt.timedelta(days=365 * 3)).isoformat(), "CF_CFJG": name, "CF_CFJGDM": code,
        "CF_SJLY": name, "CF_SJLYDM": code, "source_agency": agency, "agency_record_id": record_id,
        "severity": severity,
    }  # fmt: skip
    record.update(extra)
    return {k: v for k, v in record.items() if v is not None}


@dataclass
class Hub:
    """A migrated hub on a SQLite file, with a token per role and an app to call."""

    runtime: HubRuntime
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self):
        return self.runtime.engine

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def client(self) -> TestClient:
        return TestClient(create_app(self.runtime), raise_server_exceptions=False)

    def grant(self, n: int, **overrides) -> str:
        """Record one licence grant through record_grants; returns the company's USCC."""
        with session_scope(self.engine) as session:
            record_grants(session, [parse_record_grant(grant(n, **overrides))], self.runtime.registry, actor="test")
        return overrides.get("XK_XDR_SHXYM") or grant(n)["XK_XDR_SHXYM"]

    def violation(self, uscc: str, agency: str, record_id: str, **kw) -> None:
        """Store one penalty through store_violation, as a pull would."""
        record = parse_record(ViolationRecord, violation(uscc, agency, record_id, **kw), record=record_id)
        with session_scope(self.engine) as session:
            store_violation(session, record)

    def pulled(self, *, hours_ago: float = 1.0, only: list[str] | None = None, never: tuple[str, ...] = ()) -> None:
        """Set every agency's last successful pull (freshness) as if a sync just ran."""
        with session_scope(self.engine) as session:
            for code in self.runtime.registry:
                if only is not None and code not in only:
                    continue
                row = session.get(Agency, code)
                row.last_pull_at = None if code in never else utcnow() - dt.timedelta(hours=hours_ago)
                session.add(row)


def parse_record_grant(data: dict) -> LicenceGrant:
    return parse_record(LicenceGrant, data, record="test")


ROLES = {
    "reviewer": (Role.REVIEWER, None),
    "auditor": (Role.AUDITOR, None),
    "admin": (Role.ADMIN, None),
    "intake": (Role.INTAKE, None),
    "scjg": (Role.REGULATOR, "SCJG"),
    "gsj": (Role.REGULATOR, "GSJ"),
}


def make_hub(tmp_path: Path, *, migrated: bool = True, database_url: str | None = None) -> Hub:
    tokens_file = tmp_path / "tokens.json"
    settings = Settings(data_dir=tmp_path, database_url=database_url or f"sqlite:///{tmp_path / 'hub.sqlite3'}",
                        api_tokens_file=tokens_file, pki_dir=tmp_path / "no-pki", freshness_hours=24.0)  # fmt: skip
    runtime = HubRuntime(settings)
    hub = Hub(runtime)
    for who, (role, agency) in ROLES.items():
        hub.tokens[who] = add_token(tokens_file, name=who, role=role, agency=agency)
    if migrated:
        runtime.init_database()
    return hub


