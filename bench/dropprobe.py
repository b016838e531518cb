"""Peak RSS of a file-drop ingest against the number of rows: flat, since a drop is read in pages.

``python -m bench.dropprobe --compare N DIR`` writes XFZD drops (GBK CSV and its signed manifest,
on a directory share; bench.filedrop.write_drop) of N and 10×N rows, row by row, then ingests each
in a fresh interpreter (``python -m bench.dropprobe N DROP_ROOT WORK PKI_DIR``) through the real adapter and hub.sync.pull_agency
into SQLite, and prints both peaks and their ratio. The child only pulls, so its peak belongs to
the pull: claim, hash, dry parse, then pages of ``chunk_records`` committed one by one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.measure import peak_rss_mb, run_child

__all__: list[str] = []


def _ingest(root: Path, work: Path, pki_dir: Path) -> None:
    from bench.filedrop import hub_ingest
    from certs.pki import PkiLayout

    m = hub_ingest(f"sqlite:///{work / 'drop.sqlite3'}", root, work, PkiLayout(pki_dir))
    print(json.dumps({"records": m.records, "seconds": m.seconds, "peak_mb": peak_rss_mb(), **m.extra}))


def _compare(count: int, work: Path) -> None:
    from bench.filedrop import make_pki, write_drop

    pki = make_pki(work / "pki")
    results = {}
    for n in (count, 10 * count):
        root = work / f"drop-{n}"
        write_drop(root, n, pki)
        results[n] = run_child("bench.dropprobe", [str(n), str(root), str(work / f"work-{n}"), str(pki.root)])
        print(f"{n:>10,} rows: {results[n]['records']:,} stored in {results[n]['seconds']:.1f} s, "
              f"peak RSS {results[n]['peak_mb']:.1f} MiB", flush=True)  # fmt: skip
    ratio = results[10 * count]["peak_mb"] / results[count]["peak_mb"]
    print(json.dumps({"rows": [count, 10 * count], "peak_mb": [results[n]["peak_mb"] for n in results],
                      "ratio": round(ratio, 3), "flat": ratio <= 1.25}))  # fmt: skip


def main() -> None:
    if sys.argv[1] == "--compare":
        _compare(int(sys.argv[2]), Path(sys.argv[3]))
        return
    work = Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    _ingest(Path(sys.argv[2]), work, Path(sys.argv[4]))


if __name__ == "__main__":
    main()
