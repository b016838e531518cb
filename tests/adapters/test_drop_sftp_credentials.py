"""An SFTP agency's credential never reaches an error message (they end up in agencies.last_error,
`hub status`, the audit log and Celery's logs): not a pasted key, not even the key's path."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.drop_config import FileDropConfig, make_transport
from contracts.registry import load_registry
from hub.errors import ConfigurationError
from hub.runtime import HubRuntime
from hub.settings import Settings

_KEY = ec.generate_private_key(ec.SECP256R1())
_OPENSSH = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                              serialization.NoEncryption()).decode()  # fmt: skip
_PKCS8 = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()  # fmt: skip
_HOST_KEY = _KEY.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _config(**extra: str) -> FileDropConfig:
    return FileDropConfig(code="XFZD", endpoint="sftp://hub@127.0.0.1:9/drops", host_key=_HOST_KEY, **extra)


def _secret_lines(secret: str) -> list[str]:
    return [line for line in secret.splitlines() if len(line) > 8 and "-----" not in line] or [secret]


@pytest.mark.parametrize("pasted", [_OPENSSH, _PKCS8, _PKCS8.replace("\n", "\\n")],
                         ids=["openssh", "pkcs8", "one-line"])  # fmt: skip
def test_a_key_pasted_where_its_path_belongs_is_refused_without_quoting_it(pasted):
    with pytest.raises(ConfigurationError) as caught:
        make_transport(_config(), secret=pasted)
    message = str(caught.value)
    assert "agency XFZD" in message and "credentials reference holds a private key" in message
    assert "PRIVATE KEY" not in message and not any(line in message for line in _secret_lines(pasted))


def test_a_key_in_key_file_is_refused_without_quoting_it():
    with pytest.raises(ConfigurationError, match="key_file holds a private key") as caught:
        make_transport(_config(key_file=_OPENSSH), secret="passphrase")
    assert not any(line in str(caught.value) for line in _secret_lines(_OPENSSH))
    assert "passphrase" not in str(caught.value)


@pytest.mark.parametrize("content", [None, b"not a key at all\n"], ids=["missing", "garbage"])
def test_a_key_path_from_the_credentials_is_not_quoted_either(tmp_path, content):
    path = tmp_path / "secret-dir-name" / "xfzd_sftp_key"
    if content is not None:
        path.parent.mkdir()
        path.write_bytes(content)
    with pytest.raises(ConfigurationError, match="agency XFZD: the SFTP key file named by its credentials") as caught:
        make_transport(_config(), secret=str(path))
    assert "secret-dir-name" not in str(caught.value)


def test_the_runtime_names_the_agency_not_the_key(tmp_path, monkeypatch):
    """As `hub sync` meets it: HUB_XFZD_SFTP_KEY holds the key instead of its path."""
    monkeypatch.setenv("HUB_XFZD_SFTP_KEY", _OPENSSH)
    overrides = {"XFZD": {"transport": {**load_registry()["XFZD"].transport, "host_key": _HOST_KEY}}}
    runtime = HubRuntime(Settings(data_dir=tmp_path / "hub", database_url=None, broker_url=None,
                                  pki_dir=tmp_path / "pki"), overrides=overrides)  # fmt: skip
    with pytest.raises(ConfigurationError) as caught:
        runtime.adapter_for("XFZD")
    assert "XFZD" in str(caught.value)
    assert not any(line in str(caught.value) for line in _secret_lines(_OPENSSH))
