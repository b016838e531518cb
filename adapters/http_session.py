"""The requests session every HTTP agency is reached through, REST and SOAP alike.

How the hub speaks HTTP to an agency is decided here once: the timeouts every request
gets, the agency's CA and our client certificate, and nothing taken from the environment
(no proxy, no ``REQUESTS_CA_BUNDLE``). What differs per protocol (REST's headers and
bearer token, zeep's transport) is added by the protocol's own module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

__all__ = ["AgencySession"]


class AgencySession(requests.Session):
    """A session bound to one agency's timeouts and TLS files.

    Args:
        connect_timeout: seconds to wait for a connection; with ``read_timeout``, the timeout of
            every request that does not name its own.
        read_timeout: seconds to wait for the agency's answer.
        ca_file: verify the agency against this CA bundle instead of the system's.
        client_cert: our certificate, presented for mutual TLS: with ``client_key``, or alone
            when the file holds the key too.
        client_key: the certificate's private key.
        pool_size: connections kept open to the agency; requests' default pool when None.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        ca_file: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        pool_size: int | None = None,
    ) -> None:
        super().__init__()
        self.timeout = (connect_timeout, read_timeout)
        # never let REQUESTS_CA_BUNDLE or proxy variables replace the agency's CA or route around it
        self.trust_env = False
        if ca_file:
            self.verify = str(ca_file)
        if client_cert:
            self.cert = (str(client_cert), str(client_key)) if client_key else str(client_cert)
        if pool_size is not None:
            # retries belong to the job level (honouring Retry-After), never to the connection pool
            pooled = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
            self.mount("http://", pooled)
            self.mount("https://", pooled)

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        # an agency that never answers must not hold a worker forever
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, **kwargs)
