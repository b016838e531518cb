"""File-drop transports and config: the OS/paramiko error table, real SFTP refusals, formats."""

from __future__ import annotations

import errno
import io
import socket

import paramiko
import pytest

from adapters import AdapterContext
from adapters.drop_config import FileDropConfig, make_transport
from adapters.drop_formats import encode_records, iter_records
from adapters.drop_local import LocalTransport
from adapters.drop_sftp import SftpTransport
from adapters.drop_transport import DropConflict, DropFileMissing, translate_errors
from adapters.filedrop import from_spec
from contracts.registry import load_registry
from hub.errors import ConfigurationError, FatalError, RefusedInput, TransientError
from sandbox.sftp_server import SftpServer

_KEY = paramiko.ECDSAKey.generate(bits=256)

ERROR_TABLE = [
    (socket.timeout("timed out"), TransientError),
    (TimeoutError("timed out"), TransientError),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), TransientError),
    (ConnectionResetError(errno.ECONNRESET, "reset"), TransientError),
    (EOFError(), TransientError),
    (socket.gaierror(-2, "Name or service not known"), TransientError),
    (paramiko.SSHException("Error reading SSH protocol banner"), TransientError),
    (paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 22): OSError("refused")}), TransientError),
    (OSError(errno.ESTALE, "Stale file handle"), TransientError),
    (OSError("Failure"), TransientError),  # SFTP's status-less failure
    (FileNotFoundError(errno.ENOENT, "gone"), DropFileMissing),
    (OSError(errno.ENOENT, "No such file"), DropFileMissing),
    (FileExistsError(errno.EEXIST, "exists"), DropConflict),
    (OSError(errno.ENOTEMPTY, "Directory not empty"), DropConflict),
    (paramiko.AuthenticationException("Authentication failed."), ConfigurationError),
    (paramiko.PasswordRequiredException("Private key file is encrypted"), ConfigurationError),
    (paramiko.SSHException("Server '[127.0.0.1]:2222' not found in known_hosts"), ConfigurationError),
    (paramiko.BadHostKeyException("127.0.0.1", _KEY, _KEY), FatalError),
    (PermissionError(errno.EACCES, "Permission denied"), FatalError),
    (OSError(errno.EROFS, "Read-only file system"), FatalError),
    (OSError(errno.ENOSPC, "No space left on device"), FatalError),
]


@pytest.mark.parametrize(("raised", "expected"), ERROR_TABLE, ids=lambda v: type(v).__name__)
def test_os_and_sftp_errors_are_translated_once(raised, expected):
    with pytest.raises(expected) as caught:
        with translate_errors("read from_agency/B1/manifest.json"):
            raise raised
    assert caught.value.__cause__ is raised
    assert "from_agency/B1/manifest.json" in str(caught.value)
    assert type(caught.value) is expected


def test_the_mapped_errors_are_hub_transient_where_a_retry_helps():
    assert issubclass(DropFileMissing, TransientError) and issubclass(DropConflict, TransientError)


# --- SFTP against a real server ---------------------------------------------------------------
@pytest.fixture
def drop_sftp(tmp_path):
    hub_key = paramiko.ECDSAKey.generate(bits=256)
    server = SftpServer(tmp_path / "root", host_key=paramiko.ECDSAKey.generate(bits=256), authorized_key=hub_key)
    (tmp_path / "root").mkdir()
    server.start()
    yield server, hub_key
    server.stop()


def _sftp(server: SftpServer, *, pkey: paramiko.PKey, host_key: paramiko.PKey | None = None, port=None):
    return SftpTransport(host="127.0.0.1", port=port or server.port, username="hub", root="/", pkey=pkey,
                         host_key=host_key or server.host_key, connect_timeout=2, read_timeout=2)  # fmt: skip


def test_sftp_transport_does_the_drop_operations(drop_sftp, tmp_path):
    server, hub_key = drop_sftp
    transport = _sftp(server, pkey=hub_key)
    try:
        transport.mkdir("to_agency/B1")
        transport.write_atomic("to_agency/B1/数据.csv", "许可".encode("gbk"))
        assert [e.name for e in transport.list("to_agency/B1")] == ["数据.csv"]
        assert transport.read("to_agency/B1/数据.csv").decode("gbk") == "许可"
        transport.mkdir("processing")
        transport.rename("to_agency/B1", "processing/B1")
        with pytest.raises(DropFileMissing):
            transport.rename("to_agency/B1", "processing/B2")  # the loser of a claim race
        transport.mkdir("other/B1")
        with pytest.raises(DropConflict):
            transport.rename("processing/B1", "other/B1")
        transport.remove("processing")
        assert transport.stat("processing") is None
        assert transport.list("nowhere") == []
    finally:
        transport.close()
    assert (tmp_path / "root" / "other" / "B1").is_dir()


def test_sftp_with_a_key_the_agency_does_not_know_is_a_configuration_error(drop_sftp):
    server, _ = drop_sftp
    transport = _sftp(server, pkey=paramiko.ECDSAKey.generate(bits=256))
    with pytest.raises(ConfigurationError, match="Authentication"):
        transport.list("")


def test_sftp_server_presenting_another_host_key_is_refused(drop_sftp):
    server, hub_key = drop_sftp
    transport = _sftp(server, pkey=hub_key, host_key=paramiko.ECDSAKey.generate(bits=256))
    with pytest.raises(FatalError, match="host key"):
        transport.list("")


def test_sftp_server_not_listening_is_transient(drop_sftp):
    server, hub_key = drop_sftp
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free_port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(TransientError):
        _sftp(server, pkey=hub_key, port=free_port).list("")


def test_sftp_server_keeps_clients_inside_the_served_directory(drop_sftp, tmp_path):
    server, hub_key = drop_sftp
    (tmp_path / "outside.txt").write_text("secret")
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside.txt")
    transport = _sftp(server, pkey=hub_key)
    try:
        with pytest.raises(DropFileMissing):
            transport.read("../outside.txt")  # normalised to /outside.txt inside the root
        with pytest.raises(FatalError, match="Permission denied"):
            transport.read("link")
    finally:
        transport.close()


# --- config -----------------------------------------------------------------------------------
def _spec(code: str, **changes):
    base = load_registry()[code]
    return load_registry(overrides={code: changes})[code] if changes else base


@pytest.mark.parametrize(
    ("code", "changes", "words"),
    [
        ("GHFJ", {"endpoint": "ftp://127.0.0.1/x"}, "not file or sftp"),
        ("GHFJ", {"endpoint": "file://relative/x"}, "file:///absolute"),
        ("GHFJ", {"endpoint": "file:///nonexistent/share"}, "is not a directory"),
        ("XFZD", {"endpoint": "sftp://127.0.0.1:2222/"}, "sftp://user@host"),
        ("XFZD", {}, "needs host_key"),
        ("XFZD", {"transport": {"format": "csv", "host_key": "ssh-rsa AAAA"}}, "needs key_file"),
        ("XFZD", {"transport": {"format": "docx"}}, "format"),
    ],
)
def test_bad_filedrop_config_is_a_configuration_error(tmp_path, code, changes, words):
    with pytest.raises(ConfigurationError, match=words):
        from_spec(_spec(code, **changes), AdapterContext(work_dir=tmp_path))


def test_a_local_drop_needs_only_its_directory(tmp_path):
    adapter = from_spec(_spec("GHFJ", endpoint=tmp_path.as_uri()), AdapterContext(work_dir=tmp_path))
    assert isinstance(adapter.transport, LocalTransport)
    assert adapter.config.format == "xml" and adapter.config.xml_record == "Item"
    assert adapter.probe().ok


def test_the_sftp_key_path_can_come_from_the_credentials(tmp_path, drop_sftp):
    server, hub_key = drop_sftp
    key_file = tmp_path / "id_ecdsa"
    hub_key.write_private_key_file(str(key_file), password="s3cret")
    config = FileDropConfig(code="XFZD", endpoint=f"sftp://hub@127.0.0.1:{server.port}/",
                            host_key=server.host_key_line, key_file=str(key_file))  # fmt: skip
    with pytest.raises(ConfigurationError, match="passphrase"):
        make_transport(config)
    transport = make_transport(config, secret="s3cret")
    try:
        assert transport.list("") == []
    finally:
        transport.close()
    keyless = config.model_copy(update={"key_file": None})
    unencrypted = tmp_path / "plain_key"
    hub_key.write_private_key_file(str(unencrypted))
    transport = make_transport(keyless, secret=str(unencrypted))
    try:
        assert transport.list("") == []
    finally:
        transport.close()


# --- formats ----------------------------------------------------------------------------------
def decode_records(data: bytes, fmt, encoding: str, *, name: str) -> list[dict[str, str]]:
    return list(iter_records(io.BytesIO(data), fmt, encoding, name=name))


@pytest.mark.parametrize("fmt", ["csv", "xml", "jsonl"])
@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_records_round_trip_with_chinese_names_and_values(fmt, encoding):
    records = [{"报送编号": "m-1", "行政相对人名称": "天津南开甲餐饮管理有限公司", "备注": "含,逗号\"引号"},
               {"报送编号": "m-2", "行政相对人名称": "乙〔2026〕", "备注": ""}]  # fmt: skip
    data = encode_records(records, fmt, encoding)
    assert decode_records(data, fmt, encoding, name="f") == records


def test_a_value_the_outbound_encoding_cannot_hold_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="gbk"):
        encode_records([{"名称": "emoji 🚒"}], "csv", "gbk")


@pytest.mark.parametrize(
    ("fmt", "data", "words"),
    [
        ("csv", b"a,b\r\n\xe4\xb8", "malformed utf-8 at byte offset 5"),
        ("jsonl", b'{"a": 1}\n\xff\n', "malformed utf-8 at byte offset 9"),
        ("jsonl", b'{"a": {"nested": 1}}\n', "not a flat JSON object"),
        ("csv", b"a,a\r\n1,2\r\n", "repeated"),
        ("xml", b"<records><record><a><b>x</b></a></record></records>", "not a flat text field"),
        ("xml", b"<other/>", "root element"),
        ("xml", b'<!DOCTYPE x SYSTEM "http://127.0.0.1/x.dtd"><records/>', "DTD"),
    ],
)
def test_malformed_data_files_are_refused_naming_the_file(fmt, data, words):
    with pytest.raises(RefusedInput, match=words) as caught:
        decode_records(data, fmt, "utf-8", name="B1/data")
    assert "B1/data" in str(caught.value)
