"""Unified Social Credit Code (统一社会信用代码), exactly as GB 32100-2015 and GB 11714 write it.

Eighteen characters: registration authority (1), entity type (2), administrative division
(3–8, digits), organisation code (9–17, whose own check digit is 17), overall check digit (18).
Letter-initial codes (A…, N…, Y…) are valid; a well-known library rejects them, we do not.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = [
    "CHARSET",
    "PLACEHOLDER",
    "InvalidIdentifier",
    "is_valid_uscc",
    "org_check_char",
    "org_code_of",
    "uscc_check_char",
    "validate_org_code",
    "validate_reg_no",
    "validate_uscc",
]

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {ch: i for i, ch in enumerate(CHARSET)}
_USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # 1,3,9,27,19,26,16,17,20,29,25,13,8,24,10,30,28
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

#: The official stand-in for an individual business that has no code yet. It fails the
#: checksum on purpose, so it is accepted only next to a business registration number.
PLACEHOLDER = "00000000000000000X"

#: Registration authority -> entity types in use (GB 32100-2015, annex A).
AUTHORITY_TYPES: dict[str, frozenset[str]] = {
    "1": frozenset("1239"),
    "2": frozenset("19"),
    "3": frozenset("123459"),
    "4": frozenset("19"),
    "5": frozenset("1239"),
    "6": frozenset("129"),
    "7": frozenset("129"),
    "8": frozenset("19"),
    "9": frozenset("123"),
    "A": frozenset("19"),
    "N": frozenset("1239"),
    "Y": frozenset("1"),
}

# ASCII digits only: \d also matches Arabic-Indic and other scripts' digits, which no register writes.
_REG_NO = re.compile(r"[0-9]{15}", re.ASCII)


def _ascii_form(text: str) -> str:
    """Full-width forms (１２０１…, ＡＢＣ) as the ASCII a register holds: an IME's full-width digits are
    the same number, and kept as typed they never match the company's ASCII code."""
    if text.isascii():  # nearly every code: NFKC changes no ASCII character
        return text.strip().upper()
    return unicodedata.normalize("NFKC", text).strip().upper()


class InvalidIdentifier(ValueError):
    """The identifier breaks its standard; the message says which rule."""


def _org_value(ch: str) -> int:
    # GB 11714 values letters over the full alphabet (A=10 … Z=35), unlike the USCC set.
    if ch.isdigit():
        return int(ch)
    return ord(ch) - ord("A") + 10


def org_check_char(body8: str) -> str:
    """Check character of an organisation code's first eight characters (GB 11714)."""
    remainder = 11 - sum(_org_value(c) * w for c, w in zip(body8, _ORG_WEIGHTS, strict=True)) % 11
    return {10: "X", 11: "0"}.get(remainder, str(remainder))


def uscc_check_char(body17: str) -> str:
    """Overall check character of a USCC's first seventeen characters."""
    total = sum(_VALUE[c] * w for c, w in zip(body17, _USCC_WEIGHTS, strict=True))
    return CHARSET[(31 - total % 31) % 31]


def validate_uscc(code: str, *, reg_no: str | None = None) -> str:
    """Return the code, stripped and upper-cased, or raise InvalidIdentifier naming the rule broken.

    Args:
        code: the candidate USCC.
        reg_no: the business registration number; only the placeholder code needs it.
    """
    if not isinstance(code, str):
        raise InvalidIdentifier("must be a string")
    code = _ascii_form(code)
    if code == PLACEHOLDER:
        if reg_no and _REG_NO.fullmatch(_ascii_form(reg_no)):
            return code
        raise InvalidIdentifier(
            "placeholder 00000000000000000X is accepted only with a 15-digit business registration number"
        )
    return _check_code(code)


@lru_cache(maxsize=1 << 16)  # a company's code recurs on every record of it; only valid codes are cached
def _check_code(code: str) -> str:
    if len(code) != 18:
        raise InvalidIdentifier(f"must be 18 characters, got {len(code)}")
    bad = sorted({c for c in code if c not in _VALUE})
    if bad:
        raise InvalidIdentifier(f"character(s) {''.join(bad)!r} not in the USCC character set (no I, O, Z, S, V)")
    authority, entity_type = code[0], code[1]
    if authority not in AUTHORITY_TYPES:
        raise InvalidIdentifier(f"registration authority code {authority!r} is not assigned")
    if entity_type not in AUTHORITY_TYPES[authority]:
        raise InvalidIdentifier(f"entity type {entity_type!r} is not used with authority {authority!r}")
    if not code[2:8].isdigit():
        raise InvalidIdentifier("administrative division code (positions 3–8) must be digits")
    expected_org = org_check_char(code[8:16])
    if code[16] != expected_org:
        raise InvalidIdentifier(
            f"organisation code check digit (position 17) is {code[16]!r}, expected {expected_org!r}"
        )
    expected = uscc_check_char(code[:17])
    if code[17] != expected:
        raise InvalidIdentifier(f"check digit (position 18) is {code[17]!r}, expected {expected!r}")
    return code


def is_valid_uscc(code: str, *, reg_no: str | None = None) -> bool:
    try:
        validate_uscc(code, reg_no=reg_no)
    except InvalidIdentifier:
        return False
    return True


def org_code_of(uscc: str) -> str:
    """The nine-character organisation code embedded at positions 9–17."""
    return uscc[8:17]


def validate_org_code(code: str) -> str:
    """Validate a stand-alone nine-character organisation code (GB 11714), dash allowed before the check."""
    code = _ascii_form(code).replace("-", "")
    if len(code) != 9 or not code.isascii() or not code.isalnum():
        raise InvalidIdentifier("organisation code must be 9 letters or digits")
    expected = org_check_char(code[:8])
    if code[8] != expected:
        raise InvalidIdentifier(f"organisation code check digit is {code[8]!r}, expected {expected!r}")
    return code


def validate_reg_no(reg_no: str) -> str:
    """A 15-digit business registration number (注册号)."""
    reg_no = _ascii_form(reg_no)
    if not _REG_NO.fullmatch(reg_no):
        raise InvalidIdentifier("business registration number must be 15 digits")
    return reg_no
