"""Reading licence files from the approval system: JSON lines, or CSV with XK_ column names.

A file is decoded strictly (UTF-8, with or without BOM, else GBK, or the encoding given);
every record is validated before anything is written. With problems, the import is
refused whole, each problem named by record number, field and reason — unless the caller
asks to skip invalid records, which are then quarantined with their reasons.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from contracts.records import LicenceGrant
from contracts.registry import AgencySpec
from contracts.validation import parse_record
from hub.clock import utcnow
from hub.errors import ContractViolation, Problem, RefusedInput
from hub.licences import IntakeResult, record_grants
from hub.quarantine import Refusal, licence_key, quarantine_many

__all__ = ["RawRecord", "decode", "import_licences", "read_licence_file", "reread", "validate_grants"]

MAX_FILE_BYTES = 512 * 1024 * 1024
_REPEATS = "repeats record"  # how a decision number seen earlier in the file is refused


@dataclass(frozen=True)
class RawRecord:
    number: int  # 1-based record number in the file (data rows, not counting the CSV header)
    data: dict
    raw: str
    file: str | None = None  # the file's name, to name the record by in quarantine
    format: str | None = None  # csv or jsonl: how its raw text is read again on retry

    @property
    def ref(self) -> str:
        return f"{self.file} record {self.number}" if self.file else f"record {self.number}"


def _is_utf8(encoding: str | None) -> bool:
    try:
        return encoding is not None and codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False  # refused below, naming the encoding


def decode(data: bytes, *, name: str, encoding: str | None = None) -> str:
    """Decode strictly; malformed bytes are refused with their offset, never replaced."""
    # a byte order mark is not text: kept, it would become part of the first column's name
    candidates = ["utf-8-sig"] if _is_utf8(encoding) else [encoding] if encoding else ["utf-8-sig", "gbk"]
    last: UnicodeDecodeError | None = None
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except UnicodeDecodeError as exc:
            last = exc
        except LookupError as exc:
            raise RefusedInput(f"{name}: unknown encoding {candidate!r}") from exc
    assert last is not None
    tried = " or ".join(candidates)
    raise RefusedInput(f"{name}: not valid {tried} text (byte {last.start}: {last.reason})") from last


def _cells(row: Mapping[str, str | None]) -> dict[str, str]:
    """A CSV row's named, non-empty cells, trimmed (also how a quarantined CSV row is read again)."""
    data = {k.strip(): (v.strip() if v and v.strip() else None) for k, v in row.items() if k}
    return {k: v for k, v in data.items() if v is not None}


def _json_object(text: str, where: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RefusedInput(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise RefusedInput(f"{where}: is not a JSON object")
    return data


def _csv_records(text: str, name: str) -> Iterator[RawRecord]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    first: dict[str, int] = {}
    for column, header in enumerate(reader.fieldnames or [], start=1):
        key = header.strip()
        if key and key in first:  # DictReader would keep the last cell and drop the other unseen
            raise RefusedInput(f"{name}: header: column {key!r} appears twice (columns {first[key]} and {column}); "
                               "a record would have two values for it")  # fmt: skip
        first.setdefault(key, column)
    for number, row in enumerate(reader, start=1):
        if None in row:
            raise RefusedInput(f"{name}: record {number}: more cells than the header has columns")
        yield RawRecord(number, _cells(row), json.dumps(row, ensure_ascii=False), name, "csv")


def _jsonl_records(text: str, name: str) -> Iterator[RawRecord]:
    number = 0
    # only \n ends a record: splitlines() also splits at U+2028, U+0085 … which JSON writes unescaped in strings
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        number += 1
        yield RawRecord(number, _json_object(line, f"{name}: record {number}"), line, name, "jsonl")


def read_licence_file(path: Path, *, encoding: str | None = None, fmt: str | None = None,
                      max_bytes: int = MAX_FILE_BYTES) -> list[RawRecord]:  # fmt: skip
    """Parse a JSON-lines or CSV file (by ``fmt`` or its suffix) into numbered raw records.

    Args:
        path: the file.
        encoding: utf-8 or gbk; detected when None.
        fmt: csv or jsonl; from the suffix when None.
        max_bytes: a larger file is refused before any of it is read.

    Raises:
        RefusedInput: too large, malformed bytes (file and byte offset named), or unreadable records.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise RefusedInput(f"{path.name}: {size} bytes is over the {max_bytes} byte limit")
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)  # the file may have grown since stat
    if len(data) > max_bytes:
        raise RefusedInput(f"{path.name}: over the {max_bytes} byte limit")
    text = decode(data, name=path.name, encoding=encoding)
    kind = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if kind == "csv":
        return list(_csv_records(text, path.name))
    if kind in ("jsonl", "json"):
        return list(_jsonl_records(text, path.name))
    raise RefusedInput(f"{path.name}: unknown format {kind!r} (csv or jsonl)")


def reread(raw: str, ref: str, *, fmt: str | None = None) -> RawRecord:
    """A quarantined intake record read again from its raw text, as the import read it.

    ``ref`` is its quarantine ref (``<file> record <n>``): a CSV file's row is kept as the JSON of
    its cells, and is cleaned as the import cleaned it. ``fmt`` is the import's format (csv or
    jsonl), kept with the row; rows from before it was kept (None) are taken for CSV rows when
    their file is named *.csv, or, before refs named the file, when every value is text, as a CSV
    row's are.

    Raises:
        RefusedInput: the raw text is not a JSON object.
    """
    file, _, number = ref.rpartition(" record ")
    if not file and ref.startswith("record "):
        number = ref.removeprefix("record ")
    data = _json_object(raw, f"{ref} (as kept)")
    if fmt is not None:
        from_csv = fmt == "csv"
    else:
        from_csv = file.lower().endswith(".csv") if file else all(isinstance(v, str | None) for v in data.values())
    return RawRecord(int(number) if number.isdigit() else 0, _cells(data) if from_csv else data, raw, file or None,
                     "csv" if from_csv else "jsonl")  # fmt: skip


def validate_grants(records: list[RawRecord]) -> tuple[list[tuple[RawRecord, LicenceGrant]], list[tuple[RawRecord, list[Problem]]]]:  # fmt: skip
    """Split records into valid grants and (record, problems) pairs; a decision number may appear once."""
    valid, invalid, seen = [], [], {}
    for rec in records:
        try:
            grant = parse_record(LicenceGrant, rec.data, record=str(rec.number))
        except ContractViolation as exc:
            invalid.append((rec, list(exc.problems)))
            continue
        if grant.decision_no in seen:
            problem = Problem(str(rec.number), "XK_WSH", f"{_REPEATS} {seen[grant.decision_no]}'s decision number")
            invalid.append((rec, [problem]))
            continue
        seen[grant.decision_no] = rec.number
        valid.append((rec, grant))
    return valid, invalid


def import_licences(
    session: Session,
    records: list[RawRecord],
    agencies: Mapping[str, AgencySpec],
    *,
    actor: str,
    skip_invalid: bool = False,
    source: str = "intake",
    progress: Callable[[int], None] | None = None,
) -> IntakeResult:
    """Validate every record, then record them all in the caller's transaction.

    ``progress`` is called with 1 after each grant is recorded (for a progress bar).

    Raises:
        ContractViolation: some records are invalid and ``skip_invalid`` is off; nothing was written.
    """
    began = utcnow()  # before any of this import is quarantined (see hub.quarantine.release_superseded)
    valid, invalid = validate_grants(records)
    if invalid and not skip_invalid:
        raise ContractViolation.of([p for _, problems in invalid for p in problems])
    grants = (grant for _, grant in valid)
    if progress is not None:
        grants = _reporting(grants, progress)
    result = record_grants(session, grants, agencies, actor=actor, skip_refused=skip_invalid, before=began)
    # refused by what is recorded already (an ended licence brought back): quarantined like the invalid
    by_decision = {grant.decision_no: rec for rec, grant in valid}
    invalid += [(by_decision[grant.decision_no], [problem]) for grant, problem in result.refused]
    by_format: dict[str | None, list[Refusal]] = {}  # one lookup per form (one, for a file)
    for rec, problems in invalid:
        # a repeated decision number within the file is not a bad version of that licence: the
        # first record's arrival must not release it
        repeat = any(p.field == "XK_WSH" and p.reason.startswith(_REPEATS) for p in problems)
        key = None if repeat else licence_key(rec.data.get("XK_WSH"))
        by_format.setdefault(rec.format, []).append(Refusal(rec.ref, problems, rec.raw, key))
    for raw_format, refusals in by_format.items():
        quarantine_many(session, refusals, source=source, agency_code=None, raw_format=raw_format)
    result.quarantined = len(invalid)
    return result


def _reporting(grants: Iterable[LicenceGrant], progress: Callable[[int], None]) -> Iterator[LicenceGrant]:
    for grant in grants:
        yield grant
        progress(1)
