"""Typed configuration of a file-drop agency, and the transport it implies.

Built from the agency's data file: ``endpoint`` (``file:///abs/path`` for a mounted VPN
share, ``sftp://user@host:port/path`` for SFTP) plus the ``[filedrop]`` table. Secrets never
sit in the data file: for SFTP the resolved credentials (``context.secret``) are the path
of the hub's private key, or — when ``key_file`` is configured — that key's passphrase.

``seal`` says what protects a batch beyond its manifest's SHA-256 digests, both ways:

- ``"none"``: nothing; the manifest is trusted as found.
- ``"sign"``: the manifest is signed (``manifest.jws``, certs.sealer) and data files are
  plain, so they are still hashed and parsed as streams: any size, never whole in memory.
- ``"sign+encrypt"``: signed manifest and every data file a JWE, decrypted whole in memory
  (bounded by ``max_sealed_file_bytes``).

``sealed = true`` (the old spelling) still means ``"sign+encrypt"`` and ``sealed = false``
``"none"``; giving both ``sealed`` and a ``seal`` that says otherwise is refused.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urlsplit

import paramiko
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from adapters.drop_formats import DropFormat, check_text_encoding
from adapters.drop_local import LocalTransport
from adapters.drop_sftp import SftpTransport
from adapters.drop_transport import DropTransport
from hub.errors import ConfigurationError

__all__ = ["FileDropConfig", "SealMode", "load_host_key", "make_transport"]

SealMode = Literal["none", "sign", "sign+encrypt"]


class FileDropConfig(BaseModel):
    """One file-drop agency: where its drop root is, its format, and how patient to be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    endpoint: str
    format: DropFormat = "csv"  # the agency's format, both ways
    encoding: str = "utf-8"  # outbound; inbound batches declare theirs in the manifest
    data_file: str = "licences"  # outbound data file stem; the extension follows the format
    message_id_field: str = "message_id"  # the column/element carrying each message's idempotency key
    csv_fields: list[str] = Field(default_factory=list)  # outbound column order (others follow)
    xml_root: str = "records"
    xml_record: str = "record"
    record_id_field: str | None = None  # native field with the agency's record id (for logs, quarantine)
    receipt_timeout: float = Field(60.0, gt=0)  # seconds to wait for the agency's receipt
    poll_interval: float = Field(1.0, gt=0)
    incomplete_grace: float = Field(600.0, ge=0)  # a manifest whose files stay short this long is corrupt
    claim_stale_after: float = Field(900.0, gt=0)  # a claim older than this was left by a dead worker
    # a data file larger than this is refused; unencrypted files are streamed, so disk, not memory, bounds it
    max_file_bytes: int = Field(2 * 1024**3, ge=1)
    chunk_records: int = Field(5000, ge=1)  # inbound records per page: each page commits on its own
    # "none" | "sign" | "sign+encrypt" (module docstring); signing uses certs.sealer and the agency's [tls] files
    sealed: StrictBool | None = None  # the old spelling, declared first: seal's validator reads it
    seal: SealMode = Field(None, validate_default=True)  # absent: what sealed says, else "none"
    # an encrypted (JWE) file is decrypted whole, in memory: this bounds it (certs.dropseal's own limit is 64 MiB)
    max_sealed_file_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # SFTP only
    host_key: str | None = None  # "ecdsa-sha2-nistp256 AAAA…" (or a file holding that line)
    key_file: str | None = None
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, value: str) -> str:
        return check_text_encoding(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        url = urlsplit(value)
        if url.scheme == "file":
            if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
                raise ValueError("file endpoints are file:///absolute/path")
        elif url.scheme == "sftp":
            if not url.hostname or not url.username:
                raise ValueError("sftp endpoints are sftp://user@host[:port]/path")
        else:
            raise ValueError(f"scheme {url.scheme!r} is not file or sftp")
        return value

    @field_validator("seal", mode="before")
    @classmethod
    def _seal(cls, value: object, info: ValidationInfo) -> object:
        sealed = info.data.get("sealed")  # validated before seal: it is declared first
        if sealed is None:
            return "none" if value is None else value
        implied = "sign+encrypt" if sealed else "none"
        if value is not None and value != implied:
            raise ValueError(f"{value!r} contradicts sealed = {str(sealed).lower()}, the old spelling of "
                             f"seal = {implied!r}; give seal alone: 'none', 'sign' or 'sign+encrypt'")  # fmt: skip
        return implied

    @property
    def signs(self) -> bool:
        """Manifests are signed (``manifest.jws``) both ways."""
        return self.seal != "none"

    @property
    def encrypts(self) -> bool:
        """Data files are JWEs, decrypted whole in memory."""
        return self.seal == "sign+encrypt"

    @property
    def scheme(self) -> Literal["file", "sftp"]:
        return urlsplit(self.endpoint).scheme  # type: ignore[return-value]

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.endpoint).path)


def load_host_key(text: str) -> paramiko.PKey:
    """Parse an OpenSSH public key line (``type base64 [comment]``), inline or from a file."""
    line = text.strip()
    if not line.startswith(("ssh-", "ecdsa-")) and Path(line).is_file():
        line = Path(line).read_text(encoding="utf-8").strip()
    parts = line.split()
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except (IndexError, binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise ConfigurationError(f"host_key is not an OpenSSH public key line: {exc}") from exc


def _looks_like_key(setting: str) -> bool:
    # A path never spans lines nor holds a PEM/OpenSSH armour line; a pasted key always does.
    return "-----BEGIN" in setting or "\n" in setting or "PRIVATE KEY" in setting


def _private_key(path: str, passphrase: str | None, where: str) -> paramiko.PKey:
    """Load the hub's SFTP key. ``where`` names the setting; messages never quote a credential."""
    try:
        return paramiko.PKey.from_path(path, password=passphrase.encode("utf-8") if passphrase else None)
    except (paramiko.PasswordRequiredException, TypeError) as exc:  # TypeError: encrypted PEM, no password
        raise ConfigurationError(f"{where}: needs a passphrase") from exc
    except OSError as exc:  # its str() repeats the file name, which may be the credential itself
        raise ConfigurationError(f"{where}: cannot read: {exc.strerror or type(exc).__name__}") from exc
    except (paramiko.SSHException, ValueError) as exc:
        raise ConfigurationError(f"{where}: not a usable private key ({type(exc).__name__})") from exc


def make_transport(config: FileDropConfig, *, secret: str | None = None, staging_dir: Path | None = None) -> DropTransport:
    """The transport for ``config.endpoint``; SFTP needs a pinned host key and a private key.

    ``staging_dir`` is where SFTP keeps the local copies of files it reads (see SftpTransport.open_read).
    """
    if config.scheme == "file":
        root = Path(config.path)
        if not root.is_dir():
            raise ConfigurationError(f"agency {config.code}: drop root {root} is not a directory")
        return LocalTransport(root)
    url = urlsplit(config.endpoint)
    if not config.host_key:
        raise ConfigurationError(f"agency {config.code}: SFTP needs host_key (the server's public key)")
    key_path = config.key_file or secret
    if not key_path:
        raise ConfigurationError(f"agency {config.code}: SFTP needs key_file or credentials naming the key")
    # The data file's key_file is no secret and may be shown; a path from the credentials is named by its source.
    where = (f"agency {config.code}: SFTP key_file {config.key_file}" if config.key_file
             else f"agency {config.code}: the SFTP key file named by its credentials reference")  # fmt: skip
    if _looks_like_key(key_path):
        setting = "key_file" if config.key_file else "its credentials reference"
        raise ConfigurationError(f"agency {config.code}: {setting} holds a private key itself, where the path of "
                                 "the key file belongs: save the key to a file (mode 0600) and give its path")  # fmt: skip
    passphrase = secret if config.key_file else None
    return SftpTransport(
        host=url.hostname or "",
        port=url.port or 22,
        username=unquote(url.username or ""),
        root=str(PurePosixPath(config.path or "/")),
        pkey=_private_key(key_path, passphrase, where),
        host_key=load_host_key(config.host_key),
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        staging_dir=staging_dir,
    )
