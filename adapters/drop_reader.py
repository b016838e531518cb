"""One claimed inbound batch of a file drop: checked whole, then read chunk by chunk.

No record of a batch is handed out before the whole batch has been checked:

1. the manifest: the batch it names, its kind and format;
2. the seal: the manifest's signature (``manifest.jws``) and its signer;
3. every data file against its manifest entry, size and SHA-256, hashed block by block;
4. every data file parsed through once, keeping nothing (encoding, CSV shape, hostile XML).
   Damage anywhere refuses the batch before its first chunk, as when batches were read whole,
   and the count it yields tells which chunk is the last without reading ahead.

Then :meth:`BatchReader.take` hands out the records in file order, as many as asked, and
:meth:`BatchReader.seek` moves to a record offset (where a previous worker stopped). How far
a batch has been handed out travels in the cursor token (:attr:`BatchReader.token`).

Unencrypted files (no seal, or a sign-only seal whose signed manifest carries their digests)
are hashed and parsed from a seekable local file, never held in memory: the file itself on a
share, a streamed copy for SFTP (``SftpTransport.open_read`` says why). Encrypted files (JWE)
are read and decrypted whole, in memory, bounded by ``max_sealed_file_bytes``: joserfc
decrypts a compact JWE only whole, and AES-GCM vouches for no byte before its tag, at the very
end, is checked. Their records are still handed out chunk by chunk.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from adapters.base import InboundRecord, json_text
from adapters.drop_config import FileDropConfig
from adapters.drop_formats import count_records, iter_records
from adapters.drop_manifest import MANIFEST_NAME, Manifest, Seal, verify_file, verify_stream
from adapters.drop_transport import DropTransport
from hub.errors import RefusedInput

__all__ = ["BatchReader", "in_progress", "open_batch", "read_manifest"]


@dataclass
class _DataFile:
    name: str  # "<batch id>/<file name>", as refusals name it
    stream: BinaryIO
    records: int


class BatchReader:
    """The records of one checked batch, in order, a chunk at a time. Close it when done."""

    def __init__(self, manifest: Manifest, files: list[_DataFile], config: FileDropConfig) -> None:
        self.manifest = manifest
        self.batch_id = manifest.batch_id
        self.total = sum(f.records for f in files)
        self.position = 0  # records handed out (or skipped) so far
        self._files, self._config = files, config
        self._records = self._iterate(0)

    def seek(self, offset: int) -> None:
        """Go to record ``offset`` (0 = the first); the records before it are not handed out."""
        if not 0 <= offset <= self.total:
            raise RefusedInput(f"{self.batch_id}: has {self.total} records, cannot resume after record {offset}")
        self._records, self.position = self._iterate(offset), offset

    @property
    def complete(self) -> bool:
        return self.position >= self.total

    @property
    def token(self) -> str:
        """The cursor token after what was handed out: ``<batch id>:<offset>``, or the batch id alone at the end."""
        return self.batch_id if self.complete else f"{self.batch_id}:{self.position}"

    def take(self, count: int, *, ref_field: str | None = None) -> list[InboundRecord]:
        """The next ``count`` records (fewer at the end), each with its ``ref_field`` value as ref."""
        chunk = list(itertools.islice(self._records, count))
        self.position += len(chunk)
        if len(chunk) < count and not self.complete:
            raise RefusedInput(f"{self.batch_id}: ended after {self.position} of its {self.total} records; "
                               "a file changed after it was checked")  # fmt: skip
        # raw: the row as JSON, for quarantine and the page's digest; orjson's compact text, as
        # json.dumps per row was a tenth of a drop's load
        return [InboundRecord(native=record, raw=json_text(record),
                              ref=(record.get(ref_field) or None) if ref_field else None)
                for record in chunk]  # fmt: skip

    def _iterate(self, skip: int) -> Iterator[dict[str, str]]:
        for item in self._files:
            if skip >= item.records:  # a whole file before the offset is not parsed again
                skip -= item.records
                continue
            item.stream.seek(0)
            records = iter_records(item.stream, self.manifest.format, self.manifest.encoding, name=item.name,
                                   xml_root=self._config.xml_root, xml_record=self._config.xml_record)  # fmt: skip
            yield from itertools.islice(records, skip, None)
            skip = 0

    def close(self) -> None:
        _close(self._files)
        self._files = []


def _close(files: list[_DataFile]) -> None:
    for item in files:
        with contextlib.suppress(OSError):
            item.stream.close()


def in_progress(token: str | None) -> tuple[str, int] | None:
    """``(batch id, records handed out)`` from a token ``<batch id>:<offset>``; None for none or an id alone."""
    batch_id, colon, offset = (token or "").rpartition(":")
    if not colon or not offset.isdigit():
        return None
    return batch_id, int(offset)


def read_manifest(transport: DropTransport, folder: str, batch_id: str, config: FileDropConfig) -> tuple[Manifest, bytes]:
    """The batch's manifest (and its exact bytes), refused unless it names this batch, penalties, our format."""
    manifest_bytes = transport.read(f"{folder}/{MANIFEST_NAME}")
    manifest = Manifest.from_bytes(manifest_bytes, where=batch_id)
    if manifest.batch_id != batch_id:
        raise RefusedInput(f"{batch_id}: manifest names batch {manifest.batch_id}")
    if manifest.kind != "penalties" or manifest.format != config.format:
        raise RefusedInput(f"{batch_id}: expected {config.format} penalties, "
                           f"manifest says {manifest.format} {manifest.kind}")  # fmt: skip
    return manifest, manifest_bytes


def open_batch(transport: DropTransport, folder: str, manifest: Manifest, manifest_bytes: bytes, *,
               config: FileDropConfig, seal: Seal) -> BatchReader:  # fmt: skip
    """Check the whole batch in ``folder`` (see the module docstring) and open it for reading.

    Raises:
        RefusedInput: anything about the batch does not check out; nothing of it was handed out.
        TransientError, FatalError: the transport failed (see adapters.drop_transport).
    """
    batch_id = manifest.batch_id
    present = {e.name for e in transport.list(folder)}
    sidecars = {n: transport.read(f"{folder}/{n}") for n in seal.sidecars if n in present}
    seal.verify_manifest(manifest_bytes, sidecars)
    files: list[_DataFile] = []
    try:
        for item in manifest.files:
            if item.name not in present:
                raise RefusedInput(f"{batch_id}/{item.name}: listed in the manifest but missing")
            path = f"{folder}/{item.name}"
            if not seal.encrypts:  # stored as it is: hashed and parsed as a stream
                stream: BinaryIO = transport.open_read(path)
                files.append(_DataFile(f"{batch_id}/{item.name}", stream, 0))
                verify_stream(item, stream, where=batch_id)
            else:
                if item.size > config.max_sealed_file_bytes:
                    raise RefusedInput(f"{batch_id}/{item.name}: {item.size} bytes is over the "
                                       f"{config.max_sealed_file_bytes} byte limit for encrypted files")  # fmt: skip
                stored = transport.read(path)
                verify_file(item, stored, where=batch_id)
                stream = io.BytesIO(seal.unseal_file(item.name, stored))
                del stored
                files.append(_DataFile(f"{batch_id}/{item.name}", stream, 0))
            stream.seek(0)
            files[-1].records = count_records(stream, manifest.format, manifest.encoding, name=files[-1].name,
                                              xml_root=config.xml_root, xml_record=config.xml_record)  # fmt: skip
        found = sum(f.records for f in files)
        if manifest.record_count is not None and found != manifest.record_count:
            # the files hash right, so the exporter wrote them so: it lost rows, or counted wrong
            raise RefusedInput(f"{batch_id}: the manifest says {manifest.record_count} records, its files hold {found}")
    except BaseException:
        _close(files)
        raise
    return BatchReader(manifest, files, config)
