"""Declarative mapping between an agency's native fields and the canonical records.

A mapping is data (the ``[licence_mapping]`` and ``[violation_mapping]`` tables of an
agency file): which native field holds each 双公示 item, value maps (the agency's words
for penalty types, its status codes), units (yuan → 万元), date formats, and constants
for items the agency never sends (its own name and USCC, say).
"""

from __future__ import annotations

import datetime as dt
import re
import string
import unicodedata
from decimal import Decimal, InvalidOperation
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.records import LicenceGrant, ViolationRecord, default_severity
from contracts.validation import parse_record
from hub.errors import ContractViolation, Problem

__all__ = [
    "FieldMapping",
    "canonical_licence_to_native",
    "default_severity",
    "licence_to_native",
    "native_to_violation",
    "record_id_text",
]

_TEN_THOUSAND = Decimal(10000)
_AMOUNT_FIELDS = ("CF_NR_FK", "CF_NR_WFFF")
_DATE_FIELDS = {
    "CF_JDRQ", "CF_YXQ", "CF_GSJZQ", "repair_date",
    "XK_JDRQ", "XK_YXQZ", "XK_YXQZI", "lifecycle_date",
}  # fmt: skip
_LIST_FIELDS = {"CF_CFLB"}
# ASCII digits only (\d would read Arabic-Indic digits); a comma only between 3-digit thousands groups:
# '1,2,3' or a clerk's decimal comma '0,5' read with the commas dropped were 123 and 5.
_NUMBER = re.compile(r"-?(?:[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+)(?:\.[0-9]+)?", re.ASCII)


class FieldMapping(BaseModel):
    """How one agency's record maps to a canonical one (field names are 双公示 codes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[str, str] = Field(default_factory=dict)  # canonical code -> native field
    values: dict[str, dict[str, str]] = Field(default_factory=dict)  # code -> {native: canonical}
    units: dict[str, Literal["yuan", "wanyuan"]] = Field(default_factory=dict)
    date_formats: list[str] = Field(default_factory=lambda: ["%Y-%m-%d"])
    list_separator: str = ";"
    constants: dict[str, str] = Field(default_factory=dict)  # code -> value the agency never sends
    record_id: str | None = None  # native field with the agency's own record id (violations)
    # native field -> notes appended to it ("；" after what ``fields`` put there), for an item the agency's
    # schema has no element of its own for (DSJ's has none for a licence's lifecycle, so a revocation
    # reached it as a valid licence). A note is a template of canonical codes, "撤销于{lifecycle_date}",
    # written as ``fields`` would write them, and only when every code it names has a value.
    notes: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("notes")
    @classmethod
    def _notes_name_licence_items(cls, notes: dict[str, list[str]]) -> dict[str, list[str]]:
        known = {field.alias or name for name, field in LicenceGrant.model_fields.items()}
        for native, templates in notes.items():
            for template in templates:
                unknown = sorted(set(_placeholders(template)) - known)
                if unknown:
                    raise ValueError(f"note {template!r} for {native} names {', '.join(unknown)}, "
                                     "which no licence has")  # fmt: skip
        return notes


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _fixed_layout(fmt: str) -> re.Pattern[str] | None:
    """A pattern for a format made only of %Y, %m, %d and literal characters, else None.

    For text of that exact shape it gives the date strptime would, ~10x faster; anything else
    (one-digit months, a time part) falls through to strptime.
    """
    parts, seen, i = [], set(), 0
    while i < len(fmt):
        if fmt[i] == "%":
            directive = fmt[i + 1 : i + 2]
            if directive not in ("Y", "m", "d") or directive in seen:
                return None
            seen.add(directive)
            parts.append(f"(?P<{directive}>[0-9]{{{4 if directive == 'Y' else 2}}})")
            i += 2
        else:
            if fmt[i].isdigit() or fmt[i].isspace():
                return None
            parts.append(re.escape(fmt[i]))
            i += 1
    return re.compile("".join(parts)) if seen == {"Y", "m", "d"} else None


# per format: its fixed layout, and whether two directives sit side by side (%Y%m%d), so that
# only text of the layout's exact width can be read as a date
_FIXED_LAYOUTS: dict[str, tuple[re.Pattern[str] | None, bool]] = {}


def _parse_date(value: Any, formats: list[str]) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in formats:
        if fmt not in _FIXED_LAYOUTS:
            _FIXED_LAYOUTS[fmt] = (_fixed_layout(fmt), re.search(r"%[Ymd]%[Ymd]", fmt) is not None)
        layout, compact = _FIXED_LAYOUTS[fmt]
        match = layout.fullmatch(text) if layout is not None else None
        if match is not None:
            try:
                return dt.date(int(match["Y"]), int(match["m"]), int(match["d"]))
            except ValueError:
                pass  # 2026-02-30: strptime below words the refusal
        elif compact and layout is not None:
            continue  # strptime would read 2026111 as 1 November though it may as well be 11 January
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a date in the format(s) {', '.join(formats)}")


def _parse_amount(value: Any, unit: str) -> Decimal:
    text = unicodedata.normalize("NFKC", str(value)).strip()  # full-width digits and commas (，) as ASCII
    if text.endswith("万元"):
        stated, text = "wanyuan", text[:-2]
    elif text.endswith("元"):
        stated, text = "yuan", text[:-1]
    else:
        stated = unit
    if stated != unit:
        expected = "万元" if unit == "wanyuan" else "元"
        raise ValueError(f"amount {value!r} is stated in the wrong unit; this agency sends {expected}")
    if not _NUMBER.fullmatch(text):
        if "," in text:
            raise ValueError(f"{value!r} is not a decimal amount: a comma may only separate thousands (1,000)")
        raise ValueError(f"{value!r} is not a decimal amount")
    try:
        amount = Decimal(text.replace(",", ""))
    except InvalidOperation as exc:  # pragma: no cover - the regex already refuses these
        raise ValueError(f"{value!r} is not a decimal amount") from exc
    return amount / _TEN_THOUSAND if unit == "yuan" else amount


def _converter(code: str, mapping: FieldMapping) -> Callable[[Any], Any]:
    """How one canonical field's native value is converted, decided once per mapping, not per record."""
    if code in _LIST_FIELDS:
        words, separator = mapping.values.get(code, {}), mapping.list_separator

        def as_list(value: Any) -> list[str]:
            # a JSON list may hold anything: a null is no item, a number is checked as the word it reads as
            items = [str(i) for i in value if i is not None] if isinstance(value, list) else str(value).split(separator)
            return [words.get(item.strip(), item.strip()) for item in items if item.strip()]

        return as_list
    if code in mapping.values:
        words = mapping.values[code]
        return lambda value: words.get(text := str(value).strip(), text)
    if code in _DATE_FIELDS:
        formats = mapping.date_formats
        return lambda value: _parse_date(value, formats)
    if code in _AMOUNT_FIELDS:
        unit = mapping.units.get(code, "wanyuan")
        return lambda value: _parse_amount(value, unit)
    return lambda value: value.strip() if isinstance(value, str) else value


_PLANS: dict[int, tuple[FieldMapping, Any]] = {}
_LICENCE_PLANS: dict[int, tuple[FieldMapping, Any]] = {}


def _built_once(cache: dict[int, tuple[FieldMapping, Any]], mapping: FieldMapping,
                build: Callable[[FieldMapping], Any]) -> Any:  # fmt: skip
    """``build(mapping)``, kept per mapping (frozen): mappings are few, their records many."""
    cached = cache.get(id(mapping))
    if cached is None or cached[0] is not mapping:  # a new mapping at a recycled id
        if len(cache) > 256:
            cache.clear()
        cached = cache[id(mapping)] = (mapping, build(mapping))
    return cached[1]


def _plan(mapping: FieldMapping) -> tuple[tuple[str, str, Callable[[Any], Any]], ...]:
    """(canonical code, native field, converter) for each mapped field."""
    return _built_once(_PLANS, mapping, lambda m: tuple((code, native, _converter(code, m))
                                                        for code, native in m.fields.items()))  # fmt: skip


def native_to_violation(
    native: dict[str, Any], mapping: FieldMapping, *, agency_code: str, record: str
) -> ViolationRecord:
    """Map one native record to a ViolationRecord, or raise ContractViolation naming each problem.

    Args:
        native: the agency's flat record.
        mapping: the agency's ``violation_mapping``.
        agency_code: recorded as the record's source agency.
        record: how to name the record in errors (its agency id, or its position).
    """
    data: dict[str, Any] = dict(mapping.constants)
    problems: list[Problem] = []
    for code, native_name, convert in _plan(mapping):
        value = native.get(native_name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            data[code] = convert(value)
        except (ValueError, TypeError) as exc:  # TypeError: JSON of a shape the field cannot have
            problems.append(Problem(record=record, field=f"{code} ({native_name})", reason=str(exc)))
    if problems:
        raise ContractViolation.of(problems)
    data["source_agency"] = agency_code
    if mapping.record_id:
        try:
            data["agency_record_id"] = record_id_text(native.get(mapping.record_id))
        except ValueError as exc:
            raise ContractViolation.of([Problem(record=record, field=f"agency_record_id ({mapping.record_id})",
                                                reason=str(exc))]) from exc  # fmt: skip
    # the severity, when the agency gives none, is the contract's to derive (ViolationRecord)
    return parse_record(ViolationRecord, data, record=record)


def record_id_text(value: Any) -> str | None:
    """The agency's record id as one text: a JSON 1 and 1.0 are one record, not two."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a record id")
    if isinstance(value, float | Decimal):
        whole = value.is_integer() if isinstance(value, float) else value.is_finite() and value == int(value)
        if not whole:
            raise ValueError(f"{value!r} is not a record id: ids are whole numbers or text")
        if isinstance(value, float) and abs(value) > 2**53:  # past this a float no longer holds every integer
            raise ValueError(f"{value!r} is not a record id: a number this large must be sent as text")
        value = int(value)
    return str(value if value is not None else "").strip() or None


_LicencePlan = tuple[tuple[str, str, dict[str, str], Callable[[str], str] | None], ...]


def _licence_plan(mapping: FieldMapping) -> _LicencePlan:
    """(canonical code, native name, canonical word → native word, date formatter or None) per field:
    looked up per field of every licence pushed, the inverse tables were a third of the mapping."""
    return _built_once(_LICENCE_PLANS, mapping, _build_licence_plan)


def _build_licence_plan(mapping: FieldMapping) -> _LicencePlan:
    inverse = {code: {canon: native for native, canon in reversed(list(words.items()))}
               for code, words in mapping.values.items()}  # fmt: skip
    dates = _date_formatter(mapping.date_formats[0])
    return tuple((code, native, inverse.get(code, {}), dates if code in _DATE_FIELDS else None)
                 for code, native in mapping.fields.items())  # fmt: skip


def _date_formatter(fmt: str) -> Callable[[str], str]:
    """ISO date text → ``fmt``, as ``date.strftime(fmt)`` writes it; ValueError for text that is no date.

    A format of only %Y, %m and %d is filled from the ISO text's own digits: strftime was a sixth
    of a licence's mapping. Years before 1000 (which strftime does not pad) and any other format
    take strftime.
    """
    template = fmt.replace("{", "{{").replace("}", "}}")
    for directive, slot in (("%Y", "{0}"), ("%m", "{1}"), ("%d", "{2}")):
        template = template.replace(directive, slot)
    by_digits = "%" not in template

    def write(iso: str) -> str:
        date = dt.date.fromisoformat(iso)  # the check: the digits below are a real date's
        if by_digits and len(iso) == 10 and iso[4] == iso[7] == "-" and iso[0] != "0":  # not 2026-W01-1
            return template.format(iso[0:4], iso[5:7], iso[8:10])
        return date.strftime(fmt)

    return write


def licence_to_native(grant: LicenceGrant, mapping: FieldMapping) -> dict[str, str]:
    """The grant in the agency's own field names and words; every value a string, None left out."""
    return canonical_licence_to_native(grant.model_dump(mode="json", by_alias=True), mapping)


def canonical_licence_to_native(canonical: Mapping[str, Any], mapping: FieldMapping) -> dict[str, str]:
    """A grant's canonical JSON form (``LicenceGrant.model_dump(mode="json", by_alias=True)``, as the
    hub stores it) in the agency's own field names and words; every value a string, None left out.

    The push maps stored grants this way, without validating them again: they were validated when
    recorded, and validation was a third of a push's own work per licence. A date that is no date
    still raises ValueError, naming its field.
    """
    native: dict[str, str] = {}
    for code, native_name, inverse, format_date in _licence_plan(mapping):
        value = canonical.get(code)
        if value is None:
            continue
        if format_date is not None:
            try:
                native[native_name] = format_date(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{code} ({native_name}): {value!r} is not a date: {exc}") from exc
        elif type(value) is str:  # most fields: plain text or an enum's word
            native[native_name] = inverse.get(value, value)
        elif type(value) is list:
            native[native_name] = mapping.list_separator.join(inverse.get(str(v), str(v)) for v in value)
        else:
            text = str(value)
            native[native_name] = inverse.get(text, text)
    for native_name, notes in mapping.notes.items():
        written = [note for note in (_note(t, canonical, mapping) for t in notes) if note]
        if written:
            native[native_name] = "；".join(filter(None, (native.get(native_name), *written)))
    return native


def _note(template: str, canonical: Mapping[str, Any], mapping: FieldMapping) -> str | None:
    """``template`` filled with the licence's items as the agency writes them, or None if one is missing."""
    words: dict[str, str] = {}
    for code in _placeholders(template):
        value = canonical.get(code)
        if value is None:
            return None
        words[code] = canonical_licence_to_native({code: value}, _single(code, mapping))[code]
    return template.format_map(words)


def _single(code: str, mapping: FieldMapping) -> FieldMapping:
    """``code`` mapped to itself with the agency's words and date format: how a note writes the item."""
    singles = _built_once(_SINGLES, mapping, lambda m: {})
    single = singles.get(code)
    if single is None:
        words = {code: mapping.values[code]} if code in mapping.values else {}
        single = singles[code] = FieldMapping(fields={code: code}, values=words, date_formats=mapping.date_formats)
    return single


_SINGLES: dict[int, tuple[FieldMapping, Any]] = {}
