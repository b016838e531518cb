"""The hub's HTTP API and web pages (FastAPI). Build the application with ``create_app(runtime)``."""

from hub.api.main import create_app

__all__ = ["create_app"]
