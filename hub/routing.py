"""Which agencies must receive a licence grant: the ``receives`` rules of each agency file."""

from __future__ import annotations

from collections.abc import Iterable

from contracts.records import LicenceGrant
from contracts.registry import AgencySpec

__all__ = ["route"]


def _item_matches(item: str, patterns: Iterable[str]) -> bool:
    return any(item == p or (p.endswith("*") and item.startswith(p[:-1])) for p in patterns)


def route(grant: LicenceGrant, agencies: Iterable[AgencySpec]) -> list[str]:
    """Codes of the agencies whose rules match the grant, in registry order."""
    codes = []
    for spec in agencies:
        rules = spec.receives
        if (
            rules.all
            or grant.licence_category.value in rules.licence_categories
            or _item_matches(grant.approval_item, rules.approval_items)
            or (grant.industry is not None and grant.industry in rules.industries)
        ):
            codes.append(spec.code)
    return codes
