"""Sign-only file drops (``seal = "sign"``): a signed manifest (``manifest.jws``) over plain data files,
the adapter against the XFZD (SFTP, GBK CSV) and GHFJ (directory, XML) sandbox agencies, both sides
holding certificates from one CA. Refusals through the hub are in tests/security/test_signed_drops.py."""

from __future__ import annotations

import math

import pytest

from adapters import AdapterContext, TlsFiles, build_adapter
from adapters.base import Cursor, OutboundMessage
from certs.pki import init_pki
from certs.sealer import DropSeal
from contracts.registry import load_registry
from hub.errors import ConfigurationError
from sandbox.core import AgencyBook
from sandbox.filedrop_agencies import DIALECTS, start_filedrop_agency
from tests.helpers import make_uscc

CHUNK, COUNT = 7, 50
FAST = {"receipt_timeout": 5, "poll_interval": 0.02, "incomplete_grace": 3600, "claim_stale_after": 3600,
        "chunk_records": CHUNK}  # fmt: skip


@pytest.fixture(scope="module")
def drop_pki(tmp_path_factory):
    parties = [(code, dialect.name) for code, dialect in DIALECTS.items()]
    return init_pki(tmp_path_factory.mktemp("signed-pki") / "pki", parties=parties)


class SignedDrop:
    """A sandbox agency that signs its drops and checks the hub's signature, and hub adapters for it."""

    def __init__(self, code: str, tmp_path, pki) -> None:
        d = DIALECTS[code]
        book = AgencyBook(code=code, name=d.name, uscc=d.uscc, subject_fields=d.subject_fields, malformed_every=0)
        seal = DropSeal.from_pki(pki.root, own=code, peer="hub", encrypt=False)
        self.running = start_filedrop_agency(code, root=tmp_path / "share", book=book, key_dir=tmp_path / "keys",
                                             seal=seal)  # fmt: skip
        self.code, self.dialect, self.work_dir, self.adapters = code, d, tmp_path / "work", []
        self.tls = TlsFiles(ca=pki.ca_cert, agency_cert=pki.party(code).signing_cert,
                            hub_signing_cert=pki.hub.signing_cert, hub_signing_key=pki.hub.signing_key)  # fmt: skip

    def spec(self, **transport):
        base = load_registry()[self.code]
        overrides = self.running.transport_overrides({**base.transport, **FAST, **transport})
        return load_registry(overrides={self.code: overrides})[self.code]

    def adapter(self, **transport):
        adapter = build_adapter(self.spec(**transport), AdapterContext(work_dir=self.work_dir, tls=self.tls))
        self.adapters.append(adapter)
        return adapter

    def names(self, *folder: str) -> list[str]:
        return sorted(p.name for p in self.running.root.joinpath(*folder).iterdir())

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()
        self.running.stop()


@pytest.fixture(params=["XFZD", "GHFJ"])
def signed(request, tmp_path, drop_pki):
    drop = SignedDrop(request.param, tmp_path, drop_pki)
    yield drop
    drop.close()


def fetch_all(adapter, cursor: Cursor) -> list:
    pages = []
    while True:
        page = adapter.fetch(cursor)
        pages.append(page)
        adapter.acknowledge(page)
        cursor = page.next_cursor
        if not page.more:
            return pages


def test_a_sign_only_licence_batch_is_signed_with_plain_files_and_the_agency_accepts_it(signed):
    field = signed.dialect.message_id_field
    messages = [OutboundMessage(f"signed-{n}", f"津南开许字〔2026〕{n}号", {"名称": f"天津签名{n}号有限公司"})
                for n in range(3)]  # fmt: skip

    receipts = signed.adapter(seal="sign").deliver(messages)

    assert [r.digest for r in receipts] == [m.digest for m in messages]
    assert set(signed.running.book.received) == {m.message_id for m in messages}
    (archived,) = signed.names("agency_archive")
    data_file = f"{signed.spec().transport['data_file']}.{signed.dialect.format}"
    assert signed.names("agency_archive", archived) == sorted(["manifest.json", "manifest.jws", data_file])
    plain = signed.running.root.joinpath("agency_archive", archived, data_file).read_bytes()
    assert field.encode(signed.dialect.encoding) in plain and "天津签名0号".encode(signed.dialect.encoding) in plain


def test_a_sign_only_batch_written_row_by_row_loads_in_pages_once(signed):
    book = signed.running.book
    for n in range(COUNT):
        book.add_penalty(subject_name=f"天津签名分页{n}号有限公司", uscc=make_uscc(60_000 + n))
    rows = [signed.dialect.render_penalty(p, {}) for p in book.penalties]
    batch_id = signed.running.agency.write_rows(iter(rows))  # streamed and hashed, then the manifest signed
    assert "manifest.jws" in signed.names("from_agency", batch_id)
    adapter = signed.adapter(seal="sign")

    pages = fetch_all(adapter, Cursor())

    assert len(pages) == math.ceil(COUNT / CHUNK) and {p.batch_id for p in pages} == {batch_id}
    assert [r.native for p in pages for r in p.records] == rows
    assert pages[-1].next_cursor.token == batch_id and signed.names("processed") == [batch_id]
    again = adapter.fetch(pages[-1].next_cursor)
    assert (again.records, again.batch_id, again.rejected) == ([], None, [])


def test_a_hub_that_signs_only_refuses_an_encrypted_batch_naming_the_mismatch(signed, drop_pki):
    signed.running.agency.seal = DropSeal.from_pki(drop_pki.root, own=signed.code, peer="hub")  # sign+encrypt
    signed.running.book.add_penalty(subject_name="天津加密有限公司", uscc=make_uscc(61_000))
    batch_id = signed.running.publish()

    page = signed.adapter(seal="sign").fetch(Cursor())

    assert page.records == [] and [r.ref for r in page.rejected] == [batch_id]
    assert "an encrypted file in a sign-only drop" in page.rejected[0].reason
    assert signed.names("failed") == [batch_id, f"{batch_id}.error"]


# --- the setting: one field, three values; the old boolean keeps its meaning -------------------
@pytest.mark.parametrize(
    ("transport", "words"),
    [
        ({"seal": "signed"}, "seal: Input should be 'none', 'sign' or 'sign+encrypt'"),
        ({"seal": True}, "seal: Input should be 'none', 'sign' or 'sign+encrypt'"),
        ({"sealed": "yes"}, "sealed: Input should be a valid boolean"),
        ({"sealed": True, "seal": "sign"}, "seal: Value error, 'sign' contradicts sealed = true"),
        ({"sealed": False, "seal": "sign"}, "seal: Value error, 'sign' contradicts sealed = false"),
    ],
)
def test_a_seal_setting_that_is_unknown_or_contradicts_sealed_names_the_field_and_the_values(tmp_path, transport,
                                                                                             words):  # fmt: skip
    spec = load_registry(overrides={"GHFJ": {"endpoint": tmp_path.as_uri(), "transport": transport}})["GHFJ"]
    with pytest.raises(ConfigurationError, match="GHFJ: \\[filedrop\\]") as refused:
        build_adapter(spec, AdapterContext(work_dir=tmp_path))
    assert words in str(refused.value)


@pytest.mark.parametrize(
    ("transport", "stored_suffix"),
    [({"seal": "sign"}, ".xml"), ({"seal": "sign+encrypt"}, ".xml.jwe"), ({"sealed": True}, ".xml.jwe"),
     ({"sealed": True, "seal": "sign+encrypt"}, ".xml.jwe")],
)  # fmt: skip
def test_sign_and_the_old_sealed_true_store_what_they_say(tmp_path, drop_pki, transport, stored_suffix):
    drop = SignedDrop("GHFJ", tmp_path, drop_pki)
    try:
        encrypts = stored_suffix.endswith(".jwe")
        drop.running.agency.seal = DropSeal.from_pki(drop_pki.root, own="GHFJ", peer="hub", encrypt=encrypts)
        with pytest.raises(ConfigurationError, match="signed drops .* need TLS files: peer_cert, signing_cert"):
            build_adapter(drop.spec(**transport), AdapterContext(work_dir=drop.work_dir, tls=TlsFiles(ca=drop.tls.ca)))
        drop.adapter(**transport).deliver([OutboundMessage("m-1", "津南开许字〔2026〕1号", {"SubjectName": "天津某公司"})])
        (archived,) = drop.names("agency_archive")
        assert [n for n in drop.names("agency_archive", archived) if n.startswith("licences")] == [
            f"licences{stored_suffix}"]  # fmt: skip
    finally:
        drop.close()
