"""The application factory. This module only wires: routers, error handlers, middleware, state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hub.api.auth import TokenStore
from hub.api.errors import install_error_handlers
from hub.api.metrics import build_registry
from hub.api.middleware import BodySizeLimit, RequestLog
from hub.api.routes import agencies, companies, feeds, health, licences, quarantine, violations
from hub.compliance import VerdictRules, load_rules
from hub.db import WalCheckpointer
from hub.runtime import HubRuntime

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


def create_app(runtime: HubRuntime, *, tokens: TokenStore | None = None, rules: VerdictRules | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, web: bool = True) -> FastAPI:  # fmt: skip
    """The API (OpenAPI at /docs) and, unless ``web`` is off, the reviewer web pages.

    Args:
        runtime: settings, engine and agency registry.
        tokens: API tokens; by default read from Settings.api_tokens_file (none configured: nobody gets in).
        rules: verdict rules; by default contracts/verdict_rules.toml.
        max_body_bytes: larger request bodies are refused with 413.
        web: also serve the server-rendered pages (search, company, status, login).
    """
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # every reviewer lookup commits: on SQLite the server keeps the WAL short so its requests don't checkpoint
        with WalCheckpointer(runtime.engine):
            yield

    app = FastAPI(title="Shenguan Hub", version="1.0", lifespan=lifespan,
                  description="Licences out to agencies, violations back to reviewers.")  # fmt: skip
    app.state.runtime = runtime
    app.state.tokens = tokens if tokens is not None else TokenStore.load(runtime.settings.api_tokens_file)
    app.state.rules = rules or load_rules()
    app.state.metrics_registry, latency = build_registry(runtime.engine)
    install_error_handlers(app)
    for module in (health, companies, licences, violations, feeds, agencies, quarantine):
        app.include_router(module.router)
    if web:
        from hub.web import pages

        pages.mount(app)
    # Added last = outermost: latency (and the log line) cover the size check too.
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestLog, histogram=latency)
    return app
