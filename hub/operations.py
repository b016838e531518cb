"""Operations that combine wiring and domain logic: a full sync of some agencies, in-process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hub.errors import HubError, LeaseLost
from hub.leases import holder_name, lease_for
from hub.runtime import HubRuntime
from hub.push import push_agency
from hub.sync import pull_agency

__all__ = ["sync_agencies"]


def sync_agencies(runtime: HubRuntime, codes: Iterable[str], *, push: bool = True,
                  pull: bool = True) -> Iterator[tuple[str, bool]]:  # fmt: skip
    """Push then pull each agency in turn, under its lease; yield a line of outcome and whether it succeeded.

    The lease is the same one the Celery workers take, so `hub sync` never races a worker for an
    agency. One agency failing does not stop the others: its error is reported and the loop goes on.
    """
    holder = holder_name("cli-")
    for code in codes:
        spec = runtime.agency(code)
        with lease_for(runtime.engine, spec.code, seconds=runtime.settings.lease_seconds, holder=holder) as fence:
            if fence is None:
                yield f"{code}: skipped — another worker is syncing this agency now", True
                continue
            try:
                adapter = runtime.adapter_for(code)
            except HubError as exc:
                yield f"{code}: cannot build adapter: {exc}", False
                continue
            try:
                if push:
                    yield _push(runtime, spec, adapter, fence)
                if pull:
                    yield _pull(runtime, spec, adapter, fence)
            finally:
                adapter.close()


def _push(runtime, spec, adapter, fence) -> tuple[str, bool]:
    try:
        r = push_agency(runtime.engine, spec, adapter, fence=fence)
    except LeaseLost as exc:
        return f"{spec.code}: push stopped, lease lost: {exc}", False
    except HubError as exc:
        return f"{spec.code}: push stopped: {exc.describe()}", False
    line = f"{spec.code}: pushed {r.delivered} ({r.duplicates} already held), {r.retrying} to retry, {r.dead} dead"
    return line + (f" — {r.error}" if r.error else ""), r.error is None


def _pull(runtime, spec, adapter, fence) -> tuple[str, bool]:
    try:
        p = pull_agency(runtime.engine, spec, adapter, fence=fence)
    except HubError as exc:
        return f"{spec.code}: pull stopped: {exc.describe()}", False
    return (f"{spec.code}: pulled {p.pages} page(s): {p.created} new, {p.updated} updated, "
            f"{p.unchanged} unchanged, {p.quarantined} quarantined; cursor {p.cursor}"), True  # fmt: skip
