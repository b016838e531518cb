"""Liveness, readiness and Prometheus metrics (no authentication: they reveal no records)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.api.deps import RuntimeDep
from hub.db import is_current

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict:  # on the event loop: it waits on nothing, a thread-pool hop would be its whole cost
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and its schema is current")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks = {"database": False, "migrations": False}
    problem = None
    try:
        with runtime.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["database"] = True
        checks["migrations"] = is_current(runtime.engine)
        if not checks["migrations"]:
            problem = "the database schema is not at the newest migration; run `hub init`"
    except sa.exc.SQLAlchemyError as exc:
        problem = f"the database is not reachable ({type(exc).__name__})"
    ready = all(checks.values())
    body = {"ready": ready, "checks": checks} | ({} if ready else {"error": {"code": "not_ready", "message": problem}})
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
