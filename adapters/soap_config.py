"""Typed configuration of the SOAP adapter: the agency file's ``[soap]`` table, validated.

Paths are dotted element names: from the response element for the ack and the item list,
from one item for each native field, from the licence element for what we send.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["WSDL_DIR", "AckPaths", "AgencyCertificateUnusable", "SoapConfig", "WsseConfig"]

WSDL_DIR = Path(__file__).resolve().parent.parent / "contracts" / "wsdl"


class AgencyCertificateUnusable(Exception):
    """None of the agency certificates on file is valid now (expired, not yet valid, unreadable).

    Raised while checking an answer's WS-Security signature; adapters.soap makes it a
    ConfigurationError: the files need replacing, retrying or quarantining the answer does not help.
    Deliberately not a ValueError, which would blame the message. Defined here rather than in
    adapters.soap_wsse so that the translation does not need xmlsec.
    """


class AckPaths(BaseModel):
    """Where the acknowledgement's parts are in the push response (paths from the response element)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ack_id: str
    received_at: str
    digest: str
    duplicate: str


class WsseConfig(BaseModel):
    """WS-Security the agency demands: UsernameToken and an X.509 signature (SHA-256) over Body and Timestamp."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str | None = None  # the password is the agency's credentials reference
    sign: bool = True
    verify_response: bool = True  # against the agency's certificate, never ours
    timestamp_ttl: int = Field(300, ge=10)


class SoapConfig(BaseModel):
    """One agency's SOAP dialect: the ``[soap]`` table, plus what ``from_spec`` resolves at run time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wsdl: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.wsdl$")  # a file name under contracts/wsdl/
    binding: str  # "{namespace}Name" or the binding's local name
    push_operation: str
    pull_operation: str
    message_id_field: str  # request element carrying our message id
    licence_element: str  # request element holding the licence; native names are paths under it
    push_paths: dict[str, str] = Field(default_factory=dict)  # native name -> path, when they differ
    ack: AckPaths
    after_field: str
    limit_field: str
    items_path: str  # the list of penalty items in the pull response
    has_more_path: str
    seq_field: str  # path inside an item
    record_id_field: str
    item_paths: dict[str, str] = Field(default_factory=dict)  # native name -> path in an item; default: every leaf
    page_size: int = Field(100, ge=1, le=1000)
    wsse: WsseConfig | None = None
    # Resolved by from_spec from the agency spec and the AdapterContext:
    code: str = "SOAP"
    endpoint: str = ""
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    signing_cert: Path | None = None
    signing_key: Path | None = None
    agency_cert: Path | None = None
    password: SecretStr | None = None

    @property
    def wsdl_path(self) -> Path:
        return WSDL_DIR / self.wsdl
