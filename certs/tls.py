"""TLS contexts for mutual authentication: TLS 1.2 or newer, peers verified against a given CA.

The same files serve three users: sandbox agencies (server side, optionally requiring a
client certificate), the hub's API under uvicorn (``uvicorn_ssl_options``) and any client
presenting the hub's certificate. ``requests`` users pass ``cert=(cert, key)`` and
``verify=ca`` with the same paths instead.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from hub.errors import ConfigurationError

__all__ = ["client_ssl_context", "server_ssl_context", "uvicorn_ssl_options"]

PathLike = str | Path


def _load_chain(context: ssl.SSLContext, cert: PathLike, key: PathLike) -> None:
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        # The key's content never reaches the message; the paths and OpenSSL's reason do.
        raise ConfigurationError(f"TLS certificate {cert} / key {key}: cannot load ({exc.__class__.__name__})") from exc


def _load_ca(context: ssl.SSLContext, ca: PathLike) -> None:
    try:
        context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"TLS CA bundle {ca}: cannot load ({exc.__class__.__name__})") from exc


def server_ssl_context(
    cert: PathLike,
    key: PathLike,
    *,
    client_ca: PathLike | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server-side context presenting ``cert``.

    Args:
        cert: the server certificate (PEM; may be followed by its chain).
        key: its private key.
        client_ca: CA bundle that client certificates must chain to; without it no client
            certificate is asked for.
        require_client_cert: refuse the handshake when the client presents none (mTLS).
            With ``client_ca`` but not required, a presented certificate is still verified.

    Raises:
        ConfigurationError: a file is missing or unreadable, or mTLS is required without a CA.
    """
    if require_client_cert and client_ca is None:
        raise ConfigurationError("require_client_cert needs client_ca: which CA should client certificates chain to?")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key)
    if client_ca is not None:
        _load_ca(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_ssl_context(
    ca: PathLike, cert: PathLike | None = None, key: PathLike | None = None
) -> ssl.SSLContext:
    """A client-side context that verifies the server against ``ca`` (hostname included)
    and, given ``cert`` and ``key``, presents them for mutual TLS."""
    if (cert is None) != (key is None):
        raise ConfigurationError("a client certificate needs its key, and a key its certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(context, ca)
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    return context


def uvicorn_ssl_options(
    cert: PathLike,
    key: PathLike,
    *,
    client_ca: PathLike | None = None,
    require_client_cert: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` giving the same policy as
    ``server_ssl_context`` (uvicorn builds its own context from file names)."""
    server_ssl_context(cert, key, client_ca=client_ca, require_client_cert=require_client_cert)  # fail early
    options: dict[str, Any] = {
        "ssl_certfile": str(cert), "ssl_keyfile": str(key), "ssl_version": ssl.PROTOCOL_TLS_SERVER,
    }
    if client_ca is not None:
        options["ssl_ca_certs"] = str(client_ca)
        options["ssl_cert_reqs"] = int(ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL)
    return options
