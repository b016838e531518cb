"""Data file formats of a file drop: CSV (UTF-8 or GBK, Chinese headers), XML and JSON lines.

Every record is a flat dict of strings named in the agency's own words. Decoding is strict
and hostile input is refused whole with :class:`hub.errors.RefusedInput` naming the file
(and, for bad bytes, the byte offset): a batch is loaded entirely or not at all.

Reading is lazy: :func:`iter_records` decodes a binary stream block by block (CSV and JSON
lines through an incremental decoder, XML through lxml's ``iterparse``) and yields one
record at a time, so a data file of any size is read in constant memory. A refusal can
therefore come after some records were yielded; the file-drop reader runs a file through
once without keeping anything (:func:`count_records`) before it hands out the first record.

XML is parsed by lxml with entity resolution, network access and DTD loading off, and any
document carrying a DOCTYPE is refused (no billion laughs, no XXE). The XML shape is::

    <records>                      (root tag: config ``xml_root``)
      <record>                     (record tag: config ``xml_record``)
        <NativeField>text</NativeField> ...
      </record>
    </records>
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Sequence
from typing import BinaryIO, Literal

from lxml import etree

from hub.errors import ConfigurationError, RefusedInput

__all__ = ["DropFormat", "check_text_encoding", "count_records", "decode_text", "encode_records", "iter_records"]

DropFormat = Literal["csv", "xml", "jsonl"]

BLOCK_BYTES = 1024 * 1024  # bytes read from a data file at a time
MAX_LINE_CHARS = 16 * 1024 * 1024  # one physical line longer than this is hostile, not data
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")


def decode_text(data: bytes, encoding: str, *, name: str) -> str:
    """Decode strictly; malformed bytes are refused naming the file and the byte offset."""
    return "".join(iter_text(io.BytesIO(data), encoding, name=name))


def check_text_encoding(value: str) -> str:
    """``value`` if Python has a text codec by that name; a ValueError saying why not otherwise."""
    try:
        codec = codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown encoding {value!r}") from None
    if not getattr(codec, "_is_text_encoding", True):  # base64, rot13, zlib …: bytes to bytes
        raise ValueError(f"{value!r} is not a text encoding")
    return value


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("-", "").replace("_", "").lower() == "utf8"


def iter_text(stream: BinaryIO, encoding: str, *, name: str, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """Decode a binary stream strictly, block by block; malformed bytes are refused naming the file offset."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError as exc:
        raise ConfigurationError(f"{name}: unknown encoding {encoding!r}") from exc
    consumed = 0  # bytes of the file handed to the decoder so far
    block = stream.read(max(block_bytes, len(codecs.BOM_UTF8)))
    if _is_utf8(encoding) and block.startswith(codecs.BOM_UTF8):
        block, consumed = block[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
        block = block or stream.read(block_bytes)  # an empty block means the end of the file
    while True:
        # an incremental decoder keeps an incomplete character from the last block; an error's
        # position counts from the start of those kept bytes
        pending = decoder.getstate()[0]
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            offset = consumed - len(pending) + exc.start
            raise RefusedInput(
                f"{name}: malformed {encoding} at byte offset {offset}: {(pending + block)[exc.start:exc.start + 4]!r}",
                file=name, offset=offset,
            ) from exc  # fmt: skip
        consumed += len(block)
        if text:
            yield text
        if not block:
            return
        block = stream.read(block_bytes)


def iter_lines(stream: BinaryIO, encoding: str, *, name: str, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """Physical lines with their endings (``\\n``, ``\\r\\n`` or ``\\r``), as a file opened with ``newline=""`` gives them."""
    carry = ""
    for text in iter_text(stream, encoding, name=name, block_bytes=block_bytes):
        lines = io.StringIO(carry + text, newline="").readlines()
        # an unterminated last line, or one ending in \r (its \n may start the next block), waits
        carry = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        if len(carry) > MAX_LINE_CHARS:
            raise RefusedInput(f"{name}: a line is longer than {MAX_LINE_CHARS} characters")
        yield from lines
    if carry:
        yield carry


# --- CSV -----------------------------------------------------------------------------------
def _columns(records: Sequence[dict[str, str]], fields: Sequence[str] | None) -> list[str]:
    columns = list(fields or [])
    for record in records:
        columns.extend(k for k in record if k not in columns)
    return columns


def _encode_csv(records: Sequence[dict[str, str]], encoding: str, fields: Sequence[str] | None) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=_columns(records, fields), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue().encode(encoding)


def _iter_csv(stream: BinaryIO, encoding: str, name: str, block_bytes: int) -> Iterator[dict[str, str]]:
    reader = csv.reader(iter_lines(stream, encoding, name=name, block_bytes=block_bytes), strict=True)
    try:
        header = next(reader, None)
        if not header:
            return
        header = [h.strip() for h in header]
        if len(set(header)) != len(header) or not all(header):
            raise RefusedInput(f"{name}: header has empty or repeated column names: {header}")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise RefusedInput(
                    f"{name}: line {reader.line_num} has {len(row)} cells, the header has {len(header)}"
                )
            yield dict(zip(header, row, strict=True))
    except csv.Error as exc:
        raise RefusedInput(f"{name}: unreadable CSV at line {reader.line_num}: {exc}") from exc


# --- XML -----------------------------------------------------------------------------------
def _encode_xml(records: Sequence[dict[str, str]], encoding: str, root_tag: str, record_tag: str) -> bytes:
    try:
        root = etree.Element(root_tag)
        for record in records:
            node = etree.SubElement(root, record_tag)
            for key, value in record.items():
                etree.SubElement(node, key).text = value
    except ValueError as exc:  # a native field name that is not an XML name
        raise ConfigurationError(f"cannot write XML: {exc}") from exc
    return etree.tostring(root, xml_declaration=True, encoding=encoding, pretty_print=True)


class _NoDtd:
    """A binary stream that refuses a DTD or entity declaration in the bytes it passes on.

    lxml must never see one (no billion laughs, no XXE); the parser's own settings are the
    second line. The last bytes of each block are kept so a marker split across blocks is found.
    """

    def __init__(self, stream: BinaryIO, name: str, block_bytes: int) -> None:
        self._stream, self._name, self._block = stream, name, block_bytes
        self._tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(self._block if size is None or size < 0 else min(size, self._block))
        window = (self._tail + data).upper()
        if any(marker in window for marker in _DTD_MARKERS):
            raise RefusedInput(f"{self._name}: XML with a DTD or entity declarations is refused")
        self._tail = window[-16:]
        return data


def _iter_xml(stream: BinaryIO, name: str, root_tag: str, record_tag: str, block_bytes: int) -> Iterator[dict[str, str]]:
    events = etree.iterparse(
        _NoDtd(stream, name, block_bytes), events=("start", "end"), resolve_entities=False, no_network=True,
        load_dtd=False, dtd_validation=False, huge_tree=False, remove_comments=True, remove_pis=True,
    )  # fmt: skip
    depth = index = 0
    try:
        for event, node in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    tree = node.getroottree()
                    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
                        raise RefusedInput(f"{name}: XML with a DTD is refused")
                    if node.tag != root_tag:
                        raise RefusedInput(f"{name}: root element is <{node.tag}>, expected <{root_tag}>")
                elif depth == 2:
                    index += 1
                    if node.tag != record_tag:
                        raise RefusedInput(f"{name}: element {index} is <{node.tag}>, expected <{record_tag}>")
                elif depth == 4:
                    raise RefusedInput(f"{name}: record {index}: <{node.getparent().tag}> is not a flat text field")
                continue
            depth -= 1
            if depth != 1:
                continue
            yield _xml_record(node, name, index)
            # keep the tree to the record being read: drop it and every record before it
            node.clear()
            while node.getprevious() is not None:
                del node.getparent()[0]
    except etree.XMLSyntaxError as exc:
        raise RefusedInput(f"{name}: unparseable XML: {exc}") from exc


def _xml_record(node, name: str, index: int) -> dict[str, str]:
    record: dict[str, str] = {}
    for child in node:
        if len(child) or not isinstance(child.tag, str):
            raise RefusedInput(f"{name}: record {index}: <{child.tag}> is not a flat text field")
        if child.tag in record:
            raise RefusedInput(f"{name}: record {index}: field <{child.tag}> repeated")
        record[child.tag] = child.text or ""
    return record


# --- JSON lines ----------------------------------------------------------------------------
def _encode_jsonl(records: Sequence[dict[str, str]], encoding: str) -> bytes:
    lines = (json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records)
    return "".join(f"{line}\n" for line in lines).encode(encoding)


def _iter_jsonl(stream: BinaryIO, encoding: str, name: str, block_bytes: int) -> Iterator[dict[str, str]]:
    for number, line in enumerate(iter_lines(stream, encoding, name=name, block_bytes=block_bytes), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RefusedInput(f"{name}: line {number} is not JSON: {exc}") from exc
        if not isinstance(record, dict) or any(isinstance(v, (dict, list)) for v in record.values()):
            raise RefusedInput(f"{name}: line {number} is not a flat JSON object")
        yield {k: "" if v is None else str(v) for k, v in record.items()}


def encode_records(
    records: Sequence[dict[str, str]],
    fmt: DropFormat,
    encoding: str,
    *,
    fields: Sequence[str] | None = None,
    xml_root: str = "records",
    xml_record: str = "record",
) -> bytes:
    """Render records as one data file.

    Args:
        records: flat native dicts of strings.
        fmt: ``csv``, ``xml`` or ``jsonl``.
        encoding: e.g. ``utf-8`` or ``gbk``; a character the encoding cannot hold is a ConfigurationError.
        fields: CSV column order to start with (other keys follow in first-seen order).
        xml_root, xml_record: XML element names.
    """
    try:
        if fmt == "csv":
            return _encode_csv(records, encoding, fields)
        if fmt == "xml":
            return _encode_xml(records, encoding, xml_root, xml_record)
        return _encode_jsonl(records, encoding)
    except UnicodeEncodeError as exc:
        raise ConfigurationError(f"a value cannot be written in {encoding}: {exc}") from exc


def iter_records(
    stream: BinaryIO,
    fmt: DropFormat,
    encoding: str,
    *,
    name: str,
    xml_root: str = "records",
    xml_record: str = "record",
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[dict[str, str]]:
    """Yield the flat records of one data file as they are read from ``stream``.

    Raises RefusedInput naming ``name`` and why as soon as the damage is met, possibly after
    records were yielded (see :func:`count_records`).
    """
    if fmt == "csv":
        return _iter_csv(stream, encoding, name, block_bytes)
    if fmt == "xml":
        return _iter_xml(stream, name, xml_root, xml_record, block_bytes)
    if fmt == "jsonl":
        return _iter_jsonl(stream, encoding, name, block_bytes)
    raise RefusedInput(f"{name}: unknown format {fmt!r}")


def count_records(stream: BinaryIO, fmt: DropFormat, encoding: str, *, name: str, xml_root: str = "records",
                  xml_record: str = "record") -> int:  # fmt: skip
    """Read a whole data file, keeping nothing: its number of records, or RefusedInput for any damage."""
    return sum(1 for _ in iter_records(stream, fmt, encoding, name=name, xml_root=xml_root, xml_record=xml_record))
