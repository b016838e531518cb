"""USCC validation exactly per GB 32100-2015 / GB 11714 (vectors from domain.md), plus properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.uscc import (
    AUTHORITY_TYPES,
    CHARSET,
    PLACEHOLDER,
    InvalidIdentifier,
    is_valid_uscc,
    org_check_char,
    uscc_check_char,
    validate_org_code,
    validate_reg_no,
    validate_uscc,
)

VALID = [
    "914403001922038216",
    "9135021359498494XQ",
    "11230500001755309F",
    "914403001000002860",  # overall remainder 0
    "91440300100000040X",  # organisation check '0'
    "9144030010000018XH",  # organisation check 'X'
]


@pytest.mark.parametrize("code", VALID)
def test_domain_vectors_are_valid(code):
    assert validate_uscc(code) == code


def test_documented_invalid_vector_is_refused_with_the_rule():
    with pytest.raises(InvalidIdentifier, match="position 18"):
        validate_uscc("91350203M0001QAY9B")


def test_weights_are_powers_of_three_mod_31():
    from contracts.uscc import _USCC_WEIGHTS

    assert _USCC_WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("91440300192203821", "18 characters"),
        ("9144030019220382166", "18 characters"),
        ("91440300192203821I", "character set"),
        ("Z14403001922038216", "character set"),
        ("B14403001922038216", "authority"),
        ("941403001922038216", "entity type"),  # authority 9 has types 1,2,3 only
        ("9144A3001922038216", "division"),
        ("914403001922038206", "position 17"),
    ],
)
def test_each_rule_names_itself(code, reason):
    with pytest.raises(InvalidIdentifier, match=reason):
        validate_uscc(code)


def test_placeholder_needs_a_registration_number():
    with pytest.raises(InvalidIdentifier, match="registration number"):
        validate_uscc(PLACEHOLDER)
    assert validate_uscc(PLACEHOLDER, reg_no="120104600123456") == PLACEHOLDER
    with pytest.raises(InvalidIdentifier):
        validate_uscc(PLACEHOLDER, reg_no="12345")


@pytest.mark.parametrize("written", [" 9135021359498494xq ", "9144030010000018xh", "00000000000000000x"])
def test_a_code_typed_in_lower_case_or_with_spaces_is_the_same_code(written):
    """Agencies key codes in by hand: 'xq' and 'XQ' must name one company, not two."""
    assert validate_uscc(written, reg_no="120104600123456") == written.strip().upper()


@pytest.mark.parametrize("authority", ["A", "N", "Y"])
def test_letter_initial_codes_are_accepted(authority):
    body = authority + "1" + "120104" + "MB0123450"[:8]
    body = body[:16] + org_check_char(body[8:16])
    code = body + uscc_check_char(body)
    assert is_valid_uscc(code)


def test_organisation_code_letters_use_the_full_alphabet():
    # 'Z' is not in the USCC set but GB 11714 values it 35: the check must use the full alphabet.
    assert org_check_char("MA00000Z") == validate_org_code("MA00000Z" + org_check_char("MA00000Z"))[-1]
    assert org_check_char("A0000000") == str(11 - (10 * 3) % 11)


_pairs = [(a, t) for a, types in AUTHORITY_TYPES.items() for t in sorted(types)]
_org_chars = st.sampled_from([c for c in CHARSET])


@st.composite
def valid_codes(draw):
    authority, entity = draw(st.sampled_from(_pairs))
    division = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=6, max_size=6)))
    org8 = "".join(draw(st.lists(_org_chars, min_size=8, max_size=8)))
    org9 = org8 + org_check_char(org8)
    body = authority + entity + division + org9
    return body + uscc_check_char(body)


@settings(max_examples=300, deadline=None)
@given(valid_codes())
def test_generated_codes_validate(code):
    assert validate_uscc(code) == code


@settings(max_examples=300, deadline=None)
@given(valid_codes(), st.integers(min_value=0, max_value=17), st.sampled_from(CHARSET))
def test_any_single_character_corruption_is_refused(code, position, replacement):
    if code[position] == replacement:
        return
    corrupted = code[:position] + replacement + code[position + 1 :]
    assert not is_valid_uscc(corrupted)


@pytest.mark.parametrize(("written", "code"), [
    ("９１４４０３００１９２２０３８２１６", "914403001922038216"),  # full-width digits, as an IME types them
    ("９１３５０２１３５９４９８４９４ＸＱ", "9135021359498494XQ"),
    ("９１３５０２１３５９４９８４９４ｘｑ", "9135021359498494XQ"),
])  # fmt: skip
def test_a_full_width_code_is_the_same_ascii_code(written, code):
    assert validate_uscc(written) == code


@pytest.mark.parametrize(("written", "reg_no"), [
    ("１２０１０４０００１２３４５６", "120104000123456"), ("12010400012345６", "120104000123456"),
])  # fmt: skip
def test_a_full_width_registration_number_is_stored_in_ascii_so_it_links(written, reg_no):
    assert validate_reg_no(written) == reg_no
    assert validate_uscc(PLACEHOLDER, reg_no=written) == PLACEHOLDER


@pytest.mark.parametrize("written", ["١٢٠١٠٤٠٠٠١٢٣٤٥٦", "۱۲۰۱۰۴۰۰۰۱۲۳۴۵۶", "१२०१०४०००१२३४५६"])
def test_digits_of_other_scripts_are_no_registration_number(written):
    """\\d matched Arabic-Indic and Devanagari digits: such a number was accepted and linked to no one."""
    with pytest.raises(InvalidIdentifier, match="15 digits"):
        validate_reg_no(written)
    with pytest.raises(InvalidIdentifier, match="registration number"):
        validate_uscc(PLACEHOLDER, reg_no=written)


def test_a_full_width_organisation_code_is_the_same_ascii_code():
    assert validate_org_code("１９２２０３８２－１") == "192203821"
