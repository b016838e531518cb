"""Data file formats of a file drop: CSV (UTF-8 or GBK, Chinese headers), XML and JSON lines.

Every record is a flat dict of strings named in the agency's own words. Decoding is strict
and hostile input is refused whole with :class:`hub.errors.RefusedInput` naming the file
(and, for bad bytes, the byte offset): a batch is loaded entirely or not at all.

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
from collections.abc import Sequence
from typing import Literal

from lxml import etree

from hub.errors import ConfigurationError, RefusedInput

__all__ = ["DropFormat", "decode_records", "encode_records", "decode_text"]

DropFormat = Literal["csv", "xml", "jsonl"]


def decode_text(data: bytes, encoding: str, *, name: str) -> str:
    """Decode strictly; malformed bytes are refused naming the file and the byte offset."""
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise ConfigurationError(f"{name}: unknown encoding {encoding!r}") from exc
    if encoding.replace("-", "").replace("_", "").lower() == "utf8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode(encoding, errors="strict")
    except UnicodeDecodeError as exc:
        raise RefusedInput(
            f"{name}: malformed {encoding} at byte offset {exc.start}: {data[exc.start:exc.start + 4]!r}",
            file=name, offset=exc.start,
        ) from exc  # fmt: skip


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


def _decode_csv(data: bytes, encoding: str, name: str) -> list[dict[str, str]]:
    text = decode_text(data, encoding, name=name)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header:
            return []
        header = [h.strip() for h in header]
        if len(set(header)) != len(header) or not all(header):
            raise RefusedInput(f"{name}: header has empty or repeated column names: {header}")
        records = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise RefusedInput(
                    f"{name}: line {reader.line_num} has {len(row)} cells, the header has {len(header)}"
                )
            records.append(dict(zip(header, row, strict=True)))
        return records
    except csv.Error as exc:
        raise RefusedInput(f"{name}: unreadable CSV at line {reader.line_num}: {exc}") from exc


# --- XML -----------------------------------------------------------------------------------
def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_comments=True, remove_pis=True,
    )  # fmt: skip


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


def _decode_xml(data: bytes, name: str, root_tag: str, record_tag: str) -> list[dict[str, str]]:
    # refuse before parsing, too: a DTD is never legitimate here and lxml must not see one
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise RefusedInput(f"{name}: XML with a DTD or entity declarations is refused")
    try:
        tree = etree.fromstring(data, parser=_parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        raise RefusedInput(f"{name}: unparseable XML: {exc}") from exc
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise RefusedInput(f"{name}: XML with a DTD is refused")
    root = tree.getroot()
    if root.tag != root_tag:
        raise RefusedInput(f"{name}: root element is <{root.tag}>, expected <{root_tag}>")
    records = []
    for i, node in enumerate(root, start=1):
        if node.tag != record_tag:
            raise RefusedInput(f"{name}: element {i} is <{node.tag}>, expected <{record_tag}>")
        record: dict[str, str] = {}
        for child in node:
            if len(child) or not isinstance(child.tag, str):
                raise RefusedInput(f"{name}: record {i}: <{child.tag}> is not a flat text field")
            if child.tag in record:
                raise RefusedInput(f"{name}: record {i}: field <{child.tag}> repeated")
            record[child.tag] = child.text or ""
        records.append(record)
    return records


# --- JSON lines ----------------------------------------------------------------------------
def _encode_jsonl(records: Sequence[dict[str, str]], encoding: str) -> bytes:
    lines = (json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records)
    return "".join(f"{line}\n" for line in lines).encode(encoding)


def _decode_jsonl(data: bytes, encoding: str, name: str) -> list[dict[str, str]]:
    text = decode_text(data, encoding, name=name)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RefusedInput(f"{name}: line {number} is not JSON: {exc}") from exc
        if not isinstance(record, dict) or any(isinstance(v, (dict, list)) for v in record.values()):
            raise RefusedInput(f"{name}: line {number} is not a flat JSON object")
        records.append({k: "" if v is None else str(v) for k, v in record.items()})
    return records


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


def decode_records(
    data: bytes,
    fmt: DropFormat,
    encoding: str,
    *,
    name: str,
    xml_root: str = "records",
    xml_record: str = "record",
) -> list[dict[str, str]]:
    """Parse one data file into flat records, or raise RefusedInput naming ``name`` and why."""
    if fmt == "csv":
        return _decode_csv(data, encoding, name)
    if fmt == "xml":
        return _decode_xml(data, name, xml_root, xml_record)
    if fmt == "jsonl":
        return _decode_jsonl(data, encoding, name)
    raise RefusedInput(f"{name}: unknown format {fmt!r}")

