"""GET /api/v1/agencies: how every agency's exchange stands (hub.status)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from hub.api.auth import Permission, Principal
from hub.api.deps import RuntimeDep, SessionDep, require
from hub.status import HubStatus, collect_status

router = APIRouter(prefix="/api/v1/agencies", tags=["status"])


@router.get("", response_model=HubStatus, summary="Per-agency push/pull status, deliveries, quarantine, leases")
def agencies(session: SessionDep, runtime: RuntimeDep,
             _who: Annotated[Principal, require(Permission.READ_STATUS)]) -> HubStatus:  # fmt: skip
    return collect_status(session, runtime.registry.values(), pki_dir=runtime.settings.resolved_pki_dir,
                          freshness_hours=runtime.settings.freshness_hours)  # fmt: skip
