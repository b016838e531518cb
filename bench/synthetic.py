"""Synthetic agency data for benchmarks: penalty n rendered on demand, never stored.

A sandbox AgencyBook keeps its penalties in a list; a million PenaltyDrafts would cost
gigabytes and minutes before the first request. ``LazyPenalties`` is a read-only sequence
that builds draft n from n alone, so a book can serve 10^6 (or 10^7) records in constant
memory. It plugs into the existing AgencyBook through its ``penalties`` field: no change to
sandbox/core.py, and everything the REST/file-drop front-ends do with the list (len, slices)
works unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from functools import lru_cache

from contracts.uscc import org_check_char, uscc_check_char
from sandbox.core import PENALTY_WORDS, AgencyBook, PenaltyDraft

__all__ = ["LazyPenalties", "company_name", "synthetic_book", "synthetic_uscc"]

_TYPES = ("未按规定公示年度报告", "消防设施未保持完好有效", "未按期申报纳税", "违规停放车辆")
_FINES = (None, Decimal("0.2"), Decimal("0.5"), Decimal("1"), Decimal("3"), Decimal("20"))


@lru_cache(maxsize=65536)
def synthetic_uscc(index: int) -> str:
    """A valid USCC for company ``index`` (position 17 and 18 checks computed, as GB 32100 requires)."""
    org8 = f"{index:08d}"
    body17 = "91120104" + org8 + org_check_char(org8)
    return body17 + uscc_check_char(body17)


def company_name(index: int) -> str:
    return f"天津市南开区第{index}号商贸有限公司"


class LazyPenalties(Sequence):
    """``count`` penalties of ``companies`` companies, draft n (1-based seq) computed from n."""

    def __init__(self, code: str, count: int, *, companies: int | None = None, abbreviation: str = "") -> None:
        self.code, self.count = code, count
        self.companies = companies or max(1, count // 5)
        self.abbreviation = abbreviation or code
        self.today = dt.date.today()

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._draft(i + 1) for i in range(*index.indices(self.count))]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self._draft(index + 1)

    def _draft(self, seq: int) -> PenaltyDraft:
        company = (seq * 7919) % self.companies  # spread a company's records over the feed
        words = [PENALTY_WORDS[seq % 2], "罚款"] if seq % 3 else [PENALTY_WORDS[seq % 2]]
        fine = _FINES[1 + seq % 5] if "罚款" in words else None
        decided = self.today - dt.timedelta(days=3 + seq % 77)
        return PenaltyDraft(
            seq=seq, record_id=f"{self.code}-CF-{seq:08d}", subject_name=company_name(company),
            uscc=synthetic_uscc(company), decision_no=f"津南{self.abbreviation}罚〔{decided.year}〕{seq:07d}号",
            violation_type=_TYPES[seq % 4], facts="经查，当事人存在上述违法行为，事实清楚，证据确凿。",
            legal_basis="《中华人民共和国行政处罚法》第二十八条", penalties=words, content="、".join(words),
            fine_wanyuan=fine, decision_date=decided.isoformat(),
            validity_end=(decided + dt.timedelta(days=365)).isoformat(),
        )  # fmt: skip


def synthetic_book(code: str, name: str, uscc: str, count: int, *, subject_fields=("name", "uscc"),
                   abbreviation: str = "") -> AgencyBook:  # fmt: skip
    """An AgencyBook whose penalty list is ``count`` lazily rendered records (no malformed ones)."""
    return AgencyBook(code=code, name=name, uscc=uscc, subject_fields=tuple(subject_fields), malformed_every=0,
                      penalties=LazyPenalties(code, count, abbreviation=abbreviation))  # type: ignore[arg-type]  # fmt: skip
