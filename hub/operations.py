"""Operations that combine wiring and domain logic: a full sync of some agencies, in-process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hub.errors import HubError
from hub.runtime import HubRuntime
from hub.sync import pull_agency, push_agency

__all__ = ["sync_agencies"]


def sync_agencies(runtime: HubRuntime, codes: Iterable[str], *, push: bool = True,
                  pull: bool = True) -> Iterator[tuple[str, bool]]:  # fmt: skip
    """Push then pull each agency in turn; yield a line of outcome per step and whether it succeeded.

    One agency failing does not stop the others: its error is reported and the loop goes on.
    """
    for code in codes:
        spec = runtime.agency(code)
        try:
            adapter = runtime.adapter_for(code)
        except HubError as exc:
            yield f"{code}: cannot build adapter: {exc}", False
            continue
        try:
            if push:
                try:
                    r = push_agency(runtime.engine, spec, adapter)
                    ok = r.error is None
                    yield (f"{code}: pushed {r.delivered} ({r.duplicates} already held), {r.retrying} to retry, "
                           f"{r.dead} dead" + (f" — {r.error}" if r.error else "")), ok  # fmt: skip
                except HubError as exc:
                    yield f"{code}: push stopped: {exc} ({type(exc).__name__})", False
            if pull:
                try:
                    p = pull_agency(runtime.engine, spec, adapter)
                    yield (f"{code}: pulled {p.pages} page(s): {p.created} new, {p.updated} updated, "
                           f"{p.unchanged} unchanged, {p.quarantined} quarantined; cursor {p.cursor}"), True  # fmt: skip
                except HubError as exc:
                    yield f"{code}: pull stopped: {exc} ({type(exc).__name__})", False
        finally:
            adapter.close()
