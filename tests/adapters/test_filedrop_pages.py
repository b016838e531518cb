"""A file-drop batch handed out in pages: the adapter against the XFZD (SFTP, GBK CSV) and GHFJ
(directory, XML) sandbox agencies. How far into a batch the hub is travels in the cursor token."""

from __future__ import annotations

import io
import json
import math

import pytest

from adapters import AdapterContext, TlsFiles, build_adapter
from adapters.base import Cursor
from adapters.drop_formats import encode_records, iter_records
from contracts.registry import load_registry
from hub.errors import RefusedInput
from sandbox.core import AgencyBook
from sandbox.filedrop_agencies import DIALECTS, start_filedrop_agency
from tests.helpers import make_uscc

CHUNK, COUNT = 7, 50
FAST = {"incomplete_grace": 3600, "claim_stale_after": 3600, "chunk_records": CHUNK}


class PagedDrop:
    """One sandbox agency holding one penalty batch of COUNT records, and adapters pointed at it."""

    def __init__(self, code: str, tmp_path, **agency_options) -> None:
        d = DIALECTS[code]
        book = AgencyBook(code=code, name=d.name, uscc=d.uscc, subject_fields=d.subject_fields, malformed_every=0)
        for n in range(COUNT):
            book.add_penalty(subject_name=f"天津分页{n}号有限公司", uscc=make_uscc(30_000 + n))
        self.running = start_filedrop_agency(code, root=tmp_path / "share", book=book, key_dir=tmp_path / "keys",
                                             **agency_options)  # fmt: skip
        self.code, self.work_dir, self.adapters = code, tmp_path / "work", []
        self.record_ids = [p.record_id for p in book.penalties]

    def spec(self, **transport):
        base = load_registry()[self.code]
        overrides = self.running.transport_overrides({**base.transport, **FAST, **transport})
        return load_registry(overrides={self.code: overrides})[self.code]

    def adapter(self, tls: TlsFiles | None = None, **transport):
        adapter = build_adapter(self.spec(**transport), AdapterContext(work_dir=self.work_dir, tls=tls or TlsFiles()))
        self.adapters.append(adapter)
        return adapter

    def names(self, folder: str) -> list[str]:
        return sorted(p.name for p in (self.running.root / folder).iterdir())

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()
        self.running.stop()


@pytest.fixture(params=["XFZD", "GHFJ"])
def paged(request, tmp_path):
    drop = PagedDrop(request.param, tmp_path)
    yield drop
    drop.close()


def fetch_all(adapter, cursor: Cursor, *, acknowledge: bool = True) -> list:
    pages = []
    while True:
        page = adapter.fetch(cursor)
        pages.append(page)
        if acknowledge:
            adapter.acknowledge(page)
        cursor = page.next_cursor
        if not page.more:
            return pages


def test_a_batch_comes_in_pages_that_say_how_far_into_it_they_are(paged):
    batch_id = paged.running.publish()
    adapter = paged.adapter()

    first = adapter.fetch(Cursor())
    adapter.acknowledge(first)  # not its last page: the batch stays claimed
    assert paged.names("processed") == [] and len(paged.names("processing")) == 1
    pages = [first, *fetch_all(adapter, first.next_cursor)]

    assert len(pages) == math.ceil(COUNT / CHUNK)
    assert [r.ref for p in pages for r in p.records] == paged.record_ids
    assert [p.batch_offset for p in pages] == list(range(0, COUNT, CHUNK))
    assert [p.next_cursor.token for p in pages] == [f"{batch_id}:{n}" for n in range(CHUNK, COUNT, CHUNK)] + [batch_id]
    assert [p.batch_complete for p in pages] == [False] * (len(pages) - 1) + [True]
    assert [p.more for p in pages] == [True] * (len(pages) - 1) + [False]
    assert {p.batch_id for p in pages} == {batch_id} and {p.next_cursor.position for p in pages} == {1}
    assert paged.names("processed") == [batch_id] and paged.names("processing") == []


def test_a_worker_given_a_cursor_part_way_through_a_batch_takes_it_over_and_goes_on_from_there(paged):
    batch_id = paged.running.publish()
    died = paged.adapter()
    page = died.fetch(Cursor())
    page = died.fetch(page.next_cursor)  # two pages handed out; the worker dies with its claim still fresh
    assert page.next_cursor.token == f"{batch_id}:{2 * CHUNK}"

    survivor = paged.adapter()  # claim_stale_after is an hour: only the cursor says the batch is abandoned
    rest = fetch_all(survivor, page.next_cursor)

    assert [r.ref for p in rest for r in p.records] == paged.record_ids[2 * CHUNK :]
    assert paged.names("processed") == [batch_id] and paged.names("processing") == []


def test_a_page_the_hub_did_not_commit_is_handed_out_again(paged):
    paged.running.publish()
    adapter = paged.adapter()
    first = adapter.fetch(Cursor())
    second = adapter.fetch(first.next_cursor)

    again = adapter.fetch(first.next_cursor)  # the hub's commit of the second page failed

    assert [r.ref for r in again.records] == [r.ref for r in second.records]
    assert again.next_cursor == second.next_cursor and again.batch_offset == CHUNK


def test_a_batch_in_progress_that_was_taken_away_is_left_and_the_next_one_loaded(paged):
    lost = paged.running.publish()
    page = paged.adapter().fetch(Cursor())
    (claim,) = (paged.running.root / "processing").iterdir()
    claim.rename(paged.running.root / "failed" / lost)  # an operator moved it aside
    paged.running.book.add_penalty(subject_name="天津某公司", uscc="914403001922038216")
    following = paged.running.publish()

    next_page = paged.adapter().fetch(page.next_cursor)

    assert next_page.batch_id == following and next_page.next_cursor.token == following
    assert [r.ref for r in next_page.records] == [paged.running.book.penalties[-1].record_id]


def test_a_batch_whose_file_is_damaged_near_its_end_is_refused_before_any_page(paged):
    dialect = DIALECTS[paged.code]
    data = dialect.render([dialect.render_penalty(p, {}) for p in paged.running.book.penalties])
    if dialect.format == "csv":
        damaged, words = data + "X-LAST,只有两格\r\n".encode(dialect.encoding), "has 2 cells"
    else:
        damaged, words = data[: -len(b"</GHFJData>\n")], "unparseable XML"
    batch_id = paged.running.agency.write_batch(damaged)

    page = paged.adapter().fetch(Cursor())

    assert page.records == [] and page.batch_id is None and [r.ref for r in page.rejected] == [batch_id]
    assert words in page.rejected[0].reason
    assert paged.names("failed") == [batch_id, f"{batch_id}.error"]


def test_a_batch_loaded_before_is_moved_aside_unread_when_the_cursor_names_it(paged):
    batch_id = paged.running.publish()
    pages = fetch_all(paged.adapter(), Cursor(), acknowledge=False)  # all handed out, never acknowledged
    (claim,) = (paged.running.root / "processing").iterdir()
    claim.rename(claim.with_name(f"{batch_id}@1000-dead0000"))  # the worker died after the hub's last commit

    page = paged.adapter(claim_stale_after=60).fetch(pages[-1].next_cursor)

    assert page.records == [] and page.batch_id is None
    assert paged.names("processed") == [batch_id]


def test_a_batch_the_agency_writes_row_by_row_reads_back_as_written(paged):
    dialect = DIALECTS[paged.code]
    rows = [dialect.render_penalty(p, {}) for p in paged.running.book.penalties]
    batch_id = paged.running.agency.write_rows(iter(rows))  # how benchmarks write a million rows

    pages = fetch_all(paged.adapter(), Cursor())

    assert {p.batch_id for p in pages} == {batch_id} and [r.native for p in pages for r in p.records] == rows


# --- sealed drops: decrypted whole, still handed out in pages ---------------------------------
@pytest.fixture(scope="module")
def drop_pki(tmp_path_factory):
    init_pki = pytest.importorskip("certs.pki").init_pki
    parties = [(code, dialect.name) for code, dialect in DIALECTS.items()]
    return init_pki(tmp_path_factory.mktemp("drop-pki") / "pki", parties=parties)


def test_a_sealed_batch_comes_in_pages_and_a_tampered_signature_loads_nothing(tmp_path, drop_pki):
    from certs.sealer import DropSeal

    drop = PagedDrop("GHFJ", tmp_path, seal=DropSeal.from_pki(drop_pki.root, own="GHFJ", peer="hub"))
    tls = TlsFiles(ca=drop_pki.ca_cert, agency_cert=drop_pki.party("GHFJ").signing_cert,
                   hub_signing_cert=drop_pki.hub.signing_cert, hub_signing_key=drop_pki.hub.signing_key)  # fmt: skip
    try:
        adapter = drop.adapter(tls=tls, sealed=True)
        sealed = drop.running.publish()
        pages = fetch_all(adapter, Cursor())
        assert len(pages) == math.ceil(COUNT / CHUNK) and pages[-1].next_cursor.token == sealed
        assert [r.ref for p in pages for r in p.records] == drop.record_ids

        for n in range(COUNT):
            drop.running.book.add_penalty(subject_name=f"天津补充{n}号有限公司", uscc=make_uscc(40_000 + n))
        forged = drop.running.publish()
        jws = drop.running.root / "from_agency" / forged / "manifest.jws"
        head, payload, signature = jws.read_text("ascii").split(".")
        jws.write_text(f"{head}.{payload}.{signature[::-1]}", "ascii")

        refused = adapter.fetch(pages[-1].next_cursor)
        assert refused.records == [] and [r.ref for r in refused.rejected] == [forged]
        assert "signature" in refused.rejected[0].reason
    finally:
        drop.close()


# --- the streaming decoder: any block boundary gives the same records and the same errors ----
RECORDS = [{"记录编号": f"r-{i}", "当事人名称": "天津南开甲餐饮\r\n管理有限公司" if i % 3 == 0 else "乙〔2026〕",
            "备注": "含,逗号\"引号"} for i in range(12)]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "xml", "jsonl"])
@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_records_read_in_blocks_of_any_size_are_the_records_written(fmt, encoding):
    data = encode_records(RECORDS, fmt, encoding)
    for block in (1, 2, 3, 5, 64):
        assert list(iter_records(io.BytesIO(data), fmt, encoding, name="f", block_bytes=block)) == RECORDS


@pytest.mark.parametrize(
    ("fmt", "encoding", "data", "words"),
    [
        ("csv", "gbk", "记录编号,当事人名称\r\nX-1,天津".encode("gbk") + b"\xff\xfe" + "公司\r\n".encode("gbk"),
         "malformed gbk at byte offset 29"),
        ("csv", "utf-8", b"\xef\xbb\xbfa,b\r\n\xe4\xb8", "malformed utf-8 at byte offset 8"),  # counted with the BOM
        ("xml", "utf-8", b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "y">]><records/>', "DTD"),
        ("jsonl", "utf-8", json.dumps({"a": 1}).encode() + b"\n{\n", "line 2 is not JSON"),
    ],
)  # fmt: skip
def test_damage_is_named_the_same_whatever_the_block_size(fmt, encoding, data, words):
    for block in (1, 2, 3, 7, 1 << 20):
        with pytest.raises(RefusedInput, match=words):
            list(iter_records(io.BytesIO(data), fmt, encoding, name="f", block_bytes=block))
