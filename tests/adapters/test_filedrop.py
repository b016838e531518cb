"""File drops end to end: the hub's adapter against the XFZD (SFTP, GBK CSV) and GHFJ (directory,
XML) sandbox agencies, over a real SFTP server on 127.0.0.1 and a real directory."""

from __future__ import annotations

import json
import socket
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from adapters import AdapterContext, TlsFiles, build_adapter
from adapters.base import Cursor, OutboundMessage, Page
from contracts.mapping import licence_to_native, native_to_violation
from contracts.records import LicenceGrant
from contracts.registry import AgencySpec, load_registry
from hub.errors import ConfigurationError, ContractViolation, TransientError
from sandbox.core import AgencyBook, Fault, Malformation
from sandbox.filedrop_agencies import DIALECTS, RunningAgency, start_filedrop_agency

SAMPLES = Path(__file__).resolve().parents[2] / "contracts" / "samples" / "licences.jsonl"
FAST = {"receipt_timeout": 5, "poll_interval": 0.02, "incomplete_grace": 3600, "claim_stale_after": 3600}


def drop_grants() -> list[LicenceGrant]:
    return [LicenceGrant.model_validate(json.loads(line)) for line in SAMPLES.read_text("utf-8").splitlines()]


def drop_messages(spec: AgencySpec, prefix: str = "msg") -> list[OutboundMessage]:
    return [
        OutboundMessage(f"{prefix}-{i}", g.decision_no, licence_to_native(g, spec.licence_mapping))
        for i, g in enumerate(drop_grants())
    ]


class DropWorld:
    """One running sandbox agency and a way to build hub adapters pointed at it."""

    def __init__(self, running: RunningAgency, work_dir: Path) -> None:
        self.running, self.work_dir, self.adapters = running, work_dir, []
        self.code = running.code

    def spec(self, **transport) -> AgencySpec:
        base = load_registry()[self.code]
        overrides = self.running.transport_overrides({**base.transport, **FAST, **transport})
        return load_registry(overrides={self.code: overrides})[self.code]

    def adapter(self, **transport):
        adapter = build_adapter(self.spec(**transport), AdapterContext(work_dir=self.work_dir))
        self.adapters.append(adapter)
        return adapter

    def path(self, *parts: str) -> Path:
        return self.running.root.joinpath(*parts)

    def names(self, folder: str) -> list[str]:
        return sorted(p.name for p in self.path(folder).iterdir())


@pytest.fixture(params=["XFZD", "GHFJ"])
def drop_world(request, tmp_path):
    dialect = DIALECTS[request.param]
    book = AgencyBook(code=dialect.code, name=dialect.name, uscc=dialect.uscc,
                      subject_fields=dialect.subject_fields, malformed_every=3)  # fmt: skip
    running = start_filedrop_agency(request.param, root=tmp_path / "share", book=book, key_dir=tmp_path / "keys")
    world = DropWorld(running, tmp_path / "work")
    yield world
    for adapter in world.adapters:
        adapter.close()
    running.stop()


def drop_publish(world: DropWorld) -> str:
    world.adapter().deliver(drop_messages(world.spec()))
    batch_id = world.running.publish()
    assert batch_id
    return batch_id


# --- outbound ---------------------------------------------------------------------------------
def test_delivered_licences_are_recorded_field_by_field_with_matching_digests(drop_world):
    messages = drop_messages(drop_world.spec())
    receipts = drop_world.adapter().deliver(messages)

    assert [r.message_id for r in receipts] == [m.message_id for m in messages]
    for message, receipt in zip(messages, receipts, strict=True):
        assert receipt.digest == message.digest
        assert not receipt.duplicate
        recorded = drop_world.running.book.received[message.message_id]
        assert recorded.payload == message.payload
        assert recorded.ack.ack_id == receipt.ack_id
    # the batch went through as data file then manifest, and the agency archived it
    assert drop_world.names("to_agency") == []


def test_a_resend_after_a_lost_receipt_gets_duplicate_acks_and_is_recorded_once(drop_world):
    messages = drop_messages(drop_world.spec())
    drop_world.running.book.inject(Fault.TIMEOUT)
    with pytest.raises(TransientError, match="no receipt"):
        drop_world.adapter(receipt_timeout=0.5).deliver(messages)

    receipts = drop_world.adapter().deliver(messages)

    assert all(r.duplicate for r in receipts)
    book = drop_world.running.book
    assert len(book.received) == len(messages)
    assert {book.received[m.message_id].times_seen for m in messages} == {2}
    assert [r.digest for r in receipts] == [m.digest for m in messages]


def test_a_batch_the_agency_refuses_is_worth_retrying(drop_world):
    drop_world.running.book.inject(Fault.ERROR_500)
    with pytest.raises(TransientError, match="rejected"):
        drop_world.adapter().deliver(drop_messages(drop_world.spec()))


# --- inbound ----------------------------------------------------------------------------------
def test_fetched_penalties_map_to_what_the_agency_holds(drop_world):
    batch_id = drop_publish(drop_world)
    adapter = drop_world.adapter()
    spec = drop_world.spec()

    page = adapter.fetch(Cursor())

    assert page.batch_id == batch_id
    assert page.next_cursor.position == 1
    drafts = {d.record_id: d for d in drop_world.running.book.penalties}
    assert len(page.records) == len(drafts)
    malformed_seen = set()
    for record in page.records:
        draft = drafts[record.ref]
        if draft.malformation:
            with pytest.raises(ContractViolation) as caught:
                native_to_violation(record.native, spec.violation_mapping, agency_code=drop_world.code, record=record.ref)
            field = {
                Malformation.BAD_USCC: "CF_XDR_SHXYM", Malformation.MISSING_DECISION_NO: "CF_WSH",
                Malformation.BAD_DATE: "CF_JDRQ", Malformation.WRONG_UNIT: "CF_NR_FK",
            }[draft.malformation]  # fmt: skip
            assert any(p.field.startswith(field) and p.record == record.ref and p.reason
                       for p in caught.value.problems)  # fmt: skip
            malformed_seen.add(draft.malformation)
            continue
        violation = native_to_violation(record.native, spec.violation_mapping, agency_code=drop_world.code,
                                        record=record.ref)  # fmt: skip
        assert violation.agency_record_id == draft.record_id
        assert violation.subject_name == draft.subject_name
        assert violation.uscc == draft.uscc
        assert violation.decision_no == draft.decision_no
        assert violation.violation_type == draft.violation_type
        assert violation.facts == draft.facts
        assert violation.legal_basis == draft.legal_basis
        assert [p.value for p in violation.penalty_types] == draft.penalties
        assert violation.content == draft.content
        assert violation.fine == draft.fine_wanyuan
        assert violation.decision_date.isoformat() == draft.decision_date
        assert violation.validity_end.isoformat() == draft.validity_end
        assert violation.authority == DIALECTS[drop_world.code].name
        assert violation.source_uscc == DIALECTS[drop_world.code].uscc
    assert malformed_seen, "the sandbox invents malformed records every third penalty"

    adapter.acknowledge(page)
    assert drop_world.names("processed") == [batch_id]
    assert drop_world.names("processing") == []
    assert adapter.fetch(page.next_cursor) == Page(records=[], next_cursor=page.next_cursor, more=False)


def test_fine_units_are_converted_to_wanyuan(drop_world):
    drop_world.running.book.add_penalty(subject_name="天津某公司", uscc="914403001922038216",
                                        penalties=["罚款"], content="罚款", fine_wanyuan=Decimal("0.2"))  # fmt: skip
    drop_world.running.publish()
    record = drop_world.adapter().fetch(Cursor()).records[0]
    violation = native_to_violation(record.native, drop_world.spec().violation_mapping,
                                    agency_code=drop_world.code, record="r")  # fmt: skip
    assert violation.fine == Decimal("0.2")


@pytest.mark.parametrize("style", ["missing_manifest", "truncated"])
def test_a_half_written_batch_is_not_read_until_complete(drop_world, style):
    drop_world.running.agency.half_written = style
    drop_world.running.book.add_penalty(subject_name="天津某公司", uscc="914403001922038216")
    drop_world.running.book.inject(Fault.HALF_WRITTEN)
    batch_id = drop_world.running.publish()
    adapter = drop_world.adapter()

    early = adapter.fetch(Cursor())
    assert (early.records, early.batch_id, early.rejected) == ([], None, [])
    assert drop_world.names("from_agency") == [batch_id]

    drop_world.running.agency.complete_half_written()
    page = adapter.fetch(Cursor())
    assert page.batch_id == batch_id and len(page.records) == 1


def test_a_manifest_whose_files_never_complete_is_failed_after_the_grace_period(drop_world):
    drop_world.running.agency.half_written = "truncated"
    drop_world.running.book.add_penalty(subject_name="天津某公司", uscc="914403001922038216")
    drop_world.running.book.inject(Fault.HALF_WRITTEN)
    batch_id = drop_world.running.publish()

    page = drop_world.adapter(incomplete_grace=0).fetch(Cursor())

    assert page.records == [] and page.rejected[0].ref == batch_id
    assert "bytes after" in drop_world.path("failed", f"{batch_id}.error").read_text("utf-8")


def _xml_bomb(world: DropWorld) -> bytes:
    return (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            b"<GHFJData><Item><RecordNo>&lol2;</RecordNo></Item></GHFJData>")  # fmt: skip


def _xxe(world: DropWorld) -> bytes:
    secret = world.path("..", "secret.txt")
    secret.write_text("top secret", "utf-8")
    return (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret.resolve()}">]>'
            "<GHFJData><Item><RecordNo>&x;</RecordNo></Item></GHFJData>").encode()  # fmt: skip


def _bad_gbk(world: DropWorld) -> bytes:
    return "记录编号,当事人名称\r\nX-1,天津".encode("gbk") + b"\xff\xfe" + "公司\r\n".encode("gbk")


HOSTILE = {
    # case: (agency or None for both, data, write_batch kwargs, words expected in the reason)
    "hash mismatch": (None, lambda w: b"a,b\r\n1,2\r\n",
                      {"manifest_patch": {"files": [{"name": "p.csv", "size": 10, "sha256": "0" * 64}]},
                       "file_name": "p.csv"}, "SHA-256"),
    "path traversal": (None, lambda w: b"x", {"manifest_patch": {"files": [
        {"name": "../../etc/passwd", "size": 1, "sha256": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}]}},
        "leaves the batch directory"),
    "absolute path": (None, lambda w: b"x", {"manifest_patch": {"files": [
        {"name": "/etc/passwd", "size": 1, "sha256": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}]}},
        "leaves the batch directory"),
    "manifest not JSON": (None, lambda w: b"x", {"manifest_patch": {"sequence": "soon"}}, "invalid manifest"),
    "bad GBK bytes": ("XFZD", _bad_gbk, {}, "penalties_000001.csv: malformed gbk at byte offset 29"),
    "ragged CSV": ("XFZD", lambda w: "a,b\r\n1,2,3\r\n".encode("gbk"), {}, "has 3 cells"),
    "XML bomb": ("GHFJ", _xml_bomb, {}, "DTD"),
    "XXE": ("GHFJ", _xxe, {}, "DTD"),
    "unparseable XML": ("GHFJ", lambda w: b"<GHFJData><Item>", {}, "unparseable XML"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("drop_world", "case"),
    [(code, case) for case, (only, *_) in HOSTILE.items() for code in ("XFZD", "GHFJ") if only in (None, code)],
    indirect=["drop_world"],
)
def test_a_corrupt_or_hostile_batch_goes_to_failed_and_nothing_is_returned(drop_world, case):
    _, make, kwargs, words = HOSTILE[case]
    batch_id = drop_world.running.agency.write_batch(make(drop_world), **kwargs)

    page = drop_world.adapter().fetch(Cursor())

    assert page.records == [] and page.batch_id is None
    assert [r.ref for r in page.rejected] == [batch_id]
    assert words in page.rejected[0].reason
    assert drop_world.names("failed") == [batch_id, f"{batch_id}.error"]
    assert words in drop_world.path("failed", f"{batch_id}.error").read_text("utf-8")
    assert drop_world.names("from_agency") == drop_world.names("processing") == []


def test_only_one_of_two_workers_claims_a_batch(drop_world):
    batch_id = drop_publish(drop_world)
    first, second = drop_world.adapter(), drop_world.adapter()

    pages = [first.fetch(Cursor()), second.fetch(Cursor())]

    assert sorted(p.batch_id or "" for p in pages) == ["", batch_id]


def test_a_batch_claimed_by_a_crashed_worker_is_recovered(drop_world):
    batch_id = drop_publish(drop_world)
    crashed = drop_world.adapter()
    assert crashed.fetch(Cursor()).batch_id == batch_id  # claimed, never acknowledged
    # a live claim is left alone by other workers
    assert drop_world.adapter().fetch(Cursor()).batch_id is None
    # the layout names the claim time: make it look as if the worker died an hour ago
    (claim,) = drop_world.path("processing").iterdir()
    claim.rename(claim.with_name(f"{batch_id}@1000-dead0000"))

    survivor = drop_world.adapter(claim_stale_after=60)
    page = survivor.fetch(Cursor())
    survivor.acknowledge(page)

    assert page.batch_id == batch_id and page.records
    assert drop_world.names("processed") == [batch_id]


def test_an_unacknowledged_batch_is_fetched_again_by_the_same_worker(drop_world):
    batch_id = drop_publish(drop_world)
    adapter = drop_world.adapter()
    first = adapter.fetch(Cursor())
    again = adapter.fetch(Cursor())  # e.g. the hub's commit failed and it tries again
    assert first.batch_id == again.batch_id == batch_id
    assert first.records == again.records


def test_batches_the_hub_loaded_before_are_moved_aside_unread(drop_world):
    batch_id = drop_publish(drop_world)
    adapter = build_adapter(drop_world.spec(), AdapterContext(work_dir=drop_world.work_dir))
    drop_world.adapters.append(adapter)
    adapter.is_loaded = {batch_id}.__contains__

    page = adapter.fetch(Cursor())

    assert page.records == [] and page.batch_id is None
    assert drop_world.names("processed") == [batch_id]


def test_batches_come_in_sequence_order_and_the_cursor_follows(drop_world):
    drop_publish(drop_world)
    drop_world.running.book.add_penalty(subject_name="天津某公司", uscc="914403001922038216")
    second = drop_world.running.publish()
    adapter = drop_world.adapter()

    first_page = adapter.fetch(Cursor())
    adapter.acknowledge(first_page)
    second_page = adapter.fetch(first_page.next_cursor)

    assert first_page.more and first_page.next_cursor.position == 1
    assert second_page.batch_id == second and second_page.next_cursor.position == 2
    assert not second_page.more


def test_the_agency_repeating_a_batch_yields_a_new_batch_id_with_the_same_records(drop_world):
    drop_publish(drop_world)
    adapter = drop_world.adapter()
    first = adapter.fetch(Cursor())
    adapter.acknowledge(first)
    drop_world.running.book.inject(Fault.REPEAT)
    drop_world.running.publish()
    repeat = adapter.fetch(first.next_cursor)
    assert repeat.batch_id != first.batch_id
    # same agency record ids: the hub's upsert by (agency, record id) keeps one copy
    assert [r.ref for r in repeat.records] == [r.ref for r in first.records]


def test_probe_reports_a_reachable_drop(drop_world):
    health = drop_world.adapter().probe()
    assert health.ok, health.detail


def test_stopping_the_sandbox_leaves_no_thread_or_listening_socket(tmp_path):
    before = set(threading.enumerate())
    running = start_filedrop_agency("XFZD", root=tmp_path / "share", key_dir=tmp_path / "keys")
    world = DropWorld(running, tmp_path)
    world.adapter().deliver(drop_messages(world.spec())[:1])
    port = running.server.port
    for adapter in world.adapters:
        adapter.close()
    running.stop()

    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --- sealed drops: the seal hook takes certs.sealer.DropSeal ---------------------------------
@pytest.fixture(scope="module")
def drop_pki(tmp_path_factory):
    init_pki = pytest.importorskip("certs.pki").init_pki
    parties = [(code, dialect.name) for code, dialect in DIALECTS.items()]
    return init_pki(tmp_path_factory.mktemp("drop-pki") / "pki", parties=parties)


@pytest.mark.parametrize("code", ["XFZD", "GHFJ"])
def test_signed_and_encrypted_drops_through_the_seal_hook(tmp_path, drop_pki, code):
    from certs.sealer import DropSeal

    running = start_filedrop_agency(code, root=tmp_path / "share", key_dir=tmp_path / "keys",
                                    seal=DropSeal.from_pki(drop_pki.root, own=code, peer="hub"))  # fmt: skip
    world = DropWorld(running, tmp_path / "work")
    tls = TlsFiles(ca=drop_pki.ca_cert, agency_cert=drop_pki.party(code).signing_cert,
                   hub_signing_cert=drop_pki.hub.signing_cert, hub_signing_key=drop_pki.hub.signing_key)  # fmt: skip
    try:
        with pytest.raises(ConfigurationError, match="signed drops .* need TLS files"):
            build_adapter(world.spec(sealed=True), AdapterContext(work_dir=world.work_dir))
        adapter = build_adapter(world.spec(sealed=True), AdapterContext(work_dir=world.work_dir, tls=tls))
        world.adapters.append(adapter)
        messages = drop_messages(world.spec())

        receipts = adapter.deliver(messages)
        assert [r.digest for r in receipts] == [m.digest for m in messages]
        (archived,) = world.path("agency_archive").iterdir()
        stored = {p.name for p in archived.iterdir()}
        assert "manifest.jws" in stored and all(n.endswith((".jwe", ".json", ".jws")) for n in stored)

        sealed = running.publish()
        page = adapter.fetch(Cursor())
        assert page.batch_id == sealed and len(page.records) == len(running.book.penalties)
        adapter.acknowledge(page)

        running.book.add_penalty(subject_name="天津某公司", uscc="914403001922038216")
        unsigned = running.publish()
        world.path("from_agency", unsigned, "manifest.jws").unlink()
        refused = adapter.fetch(page.next_cursor)
        assert refused.records == [] and refused.rejected[0].ref == unsigned
        assert world.path("failed", f"{unsigned}.error").read_text("utf-8").strip()
    finally:
        for adapter in world.adapters:
            adapter.close()
        running.stop()
